"""Held-out quality of one realised child as its global distillation goes on: how far do more GKD tokens take it?

Trains RUN_DIR/realize/CHILD from the parent with the run config's GKD settings for --tokens tokens and evaluates
the child on the held-out test half (the config's `evaluate.tokens`) before training and every --eval-every tokens.
The learning-rate schedule spans the whole --tokens budget, so a mid-run figure is that of a run still at a higher
learning rate, not of a shorter run. Nothing in RUN_DIR is changed.

Without --ckpt-dir the checkpoints go to a temporary folder and a killed run starts over. With --ckpt-dir DIR the
run checkpoints there every `gkd.checkpoint_every` steps and keeps its held-out rows in DIR/rows.json, so the same
command run again resumes where it was killed (at 22-25 s per 1K-token step on a 2-core AMD VM, 1M tokens take ~7 h);
DIR/settings.json holds what the run was started with, and a rerun with other settings is refused.

Usage: puzzle gkd-scaling RUN_DIR CHILD [--tokens N] [--eval-every N] [--threads 2]
       [--config CONFIG] [--gkd KEY=VALUE ...] [--ckpt-dir DIR] [--out FILE.json]
CONFIG defaults to RUN_DIR/config.json (written by `puzzle run` and `puzzle bench`).
`--gkd lr=5e-4 --gkd cosine_weight=0` overrides the config's GKD settings for a sweep. --out FILE.json gets the
held-out rows and the per-step training losses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import lightning as L
import torch

from effinfer_core.atomic import write_atomic
from puzzle.config import ConfigError, load_config, run_config_path
from puzzle.evaluate import quality_metrics
from puzzle.gkd import GKDModule, run_gkd
from puzzle.pipeline import Pipeline
from puzzle.stages.realize import child_key

if TYPE_CHECKING:
    from puzzle.modeling_decilm import DeciLMForCausalLM


def _student(pl_module: L.LightningModule) -> torch.nn.Module:
    return cast(GKDModule, pl_module).student  # run_gkd fits a GKDModule


class HeldOutEval(L.Callback):
    """Evaluates the student on fixed held-out batches every `every` optimizer steps (and at step 0 and the end)."""

    def __init__(
        self,
        parent: DeciLMForCausalLM,
        batches: list[torch.Tensor],
        every: int,
        tokens_per_step: int,
        parent_top1: float,
        rows_path: Path | None = None,
    ):
        self.parent, self.batches, self.every = parent, batches, every
        self.tokens_per_step, self.parent_top1 = tokens_per_step, parent_top1
        self.rows_path = rows_path  # rows of a killed attempt are read back; each new row is written at once
        self.rows: list[dict[str, float]] = (
            json.loads(rows_path.read_text()) if rows_path is not None and rows_path.exists() else []
        )
        self.start = time.perf_counter()

    def evaluate(self, student: torch.nn.Module, step: int) -> None:
        if any(
            row["step"] == step for row in self.rows
        ):  # a resumed attempt retraining steps it had evaluated
            return
        student.eval()
        m = quality_metrics(
            {"child": student}, self.parent, self.batches, device=self.parent.device, progress=False
        )["child"]
        student.train()
        retention = m["top1_accuracy"] / self.parent_top1 if self.parent_top1 else float("nan")
        row = {
            "step": step,
            "tokens": step * self.tokens_per_step,
            "top1_accuracy": m["top1_accuracy"],
            "retention": retention,
            "kl": m["kl"],
            "perplexity": m["perplexity"],
            "elapsed_s": time.perf_counter() - self.start,
        }  # since this attempt started
        self.rows.append(row)
        if self.rows_path is not None:
            write_atomic(self.rows_path, json.dumps(self.rows, indent=2))
        print(
            f"{row['tokens']:>9} tokens  top-1 {row['top1_accuracy']:.4f}  retention {row['retention']:.3f}  "
            f"KL {row['kl']:.4f}  ppl {row['perplexity']:.2f}  ({row['elapsed_s']:.0f} s)",
            flush=True,
        )

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step == 0:  # not at a resumed attempt's first step, which is no evaluation point
            self.evaluate(_student(pl_module), 0)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step % self.every == 0:
            self.evaluate(_student(pl_module), trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(_student(pl_module), trainer.global_step)


def gkd_overrides(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings as a dict; load_config checks the keys and reads the values as the defaults' types."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, sep, _) in zip(items, pairs, strict=True) if not sep]
    if bad:
        raise ConfigError(f"--gkd {bad[0]!r}: expected KEY=VALUE, e.g. --gkd lr=5e-4")
    return {key: value for key, _, value in pairs}


def gkd_scaling(
    pipe: Pipeline,
    child: str,
    *,
    tokens: int,
    eval_every: int,
    ckpt_dir: Path | None = None,
    callbacks: Sequence[L.Callback] = (),
) -> dict[str, Any]:
    """Distil `child` of `pipe`'s run for `tokens` tokens with held-out rows every `eval_every` tokens (module
    docstring); returns {"child", "gkd", "parent_top1", "rows", "history"}. `callbacks` join the Trainer's."""
    config = pipe.config
    gkd = {k: v for k, v in config["gkd"].items() if k not in ("token_budget", "checkpoint_every")}
    if ckpt_dir is not None:
        record = pipe.solutions().get(child)
        if record is None:  # the key below ties the checkpoints to the child's blocks and BLD library
            raise ConfigError(f"--ckpt-dir needs a child of search/solutions.json; {child!r} is not one")
        _bind_settings(
            ckpt_dir / "settings.json",
            {
                "child": child,
                "child_key": child_key(pipe, record),
                "tokens": tokens,
                "eval_every": eval_every,
                "gkd": gkd,
                "data": config["data"],
                "seed": config["seed"],
                "evaluate_tokens": config["evaluate"]["tokens"],
            },
        )
    parent, _ = pipe.parent()
    data = pipe.datamodule()
    batches = data.heldout_batches("test", config["evaluate"]["tokens"])
    parent_top1 = quality_metrics({"parent": parent}, parent, batches, device=pipe.device, progress=False)[
        "parent"
    ]["top1_accuracy"]
    print(f"parent top-1 {parent_top1:.4f} on {sum(b.numel() for b in batches)} held-out tokens", flush=True)
    student = pipe.load_child("realize", child)
    held_out = HeldOutEval(
        parent,
        batches,
        max(1, eval_every // data.tokens_per_batch),
        data.tokens_per_batch,
        parent_top1,
        rows_path=ckpt_dir / "rows.json" if ckpt_dir is not None else None,
    )
    every = config["gkd"]["checkpoint_every"] if ckpt_dir is not None else 10**9
    with tempfile.TemporaryDirectory() if ckpt_dir is None else nullcontext(str(ckpt_dir)) as folder:
        metrics = run_gkd(
            student,
            parent,
            data,
            token_budget=tokens,
            ckpt_dir=folder,
            checkpoint_every=every,
            seed=config["seed"],
            trainer_kwargs=pipe.trainer_kwargs(f"[gkd-scaling] {child}"),
            callbacks=[held_out, *callbacks],
            **gkd,
        )
    return {
        "child": child,
        "gkd": gkd,
        "parent_top1": parent_top1,
        "rows": held_out.rows,
        "history": metrics["history"],
    }


def _bind_settings(path: Path, settings: dict[str, Any]) -> None:
    """Record a checkpointed run's settings, or refuse to resume a run that was started with other ones."""
    if path.exists():
        before = json.loads(path.read_text())
        if before != settings:
            diff = sorted(k for k in settings.keys() | before.keys() if before.get(k) != settings.get(k))
            raise ConfigError(
                f"{path.parent} holds a run started with other settings: {', '.join(diff)} differ; "
                "give another --ckpt-dir, or delete that folder to start over"
            )
        return
    write_atomic(path, json.dumps(settings, indent=2, sort_keys=True))


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("child", help="a child of the run (a folder under RUN_DIR/realize)")
    ap.add_argument("--tokens", type=int, default=524_288)
    ap.add_argument("--eval-every", type=int, default=131_072)
    ap.add_argument("--config", type=Path, default=None, help="default: RUN_DIR/config.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument(
        "--gkd",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one of the config's gkd settings (repeatable)",
    )
    ap.add_argument(
        "--ckpt-dir",
        type=Path,
        default=None,
        help="keep checkpoints and rows here, so that the same command resumes a killed run",
    )
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")


def main(args: argparse.Namespace) -> int:
    """`puzzle gkd-scaling`: ConfigError for bad input (the CLI prints it and exits with 2)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.run_dir / "realize" / args.child).is_dir():
        raise ConfigError(
            f"no realised child {args.child!r} under {args.run_dir / 'realize'}; "
            "run the pipeline's realize stage first"
        )
    overrides = gkd_overrides(args.gkd)
    config_path = run_config_path(args.run_dir, args.config)
    try:
        config = load_config(config_path, gkd=overrides or None)
        pipe = Pipeline(config, args.run_dir, progress=False)
        result = gkd_scaling(
            pipe, args.child, tokens=args.tokens, eval_every=args.eval_every, ckpt_dir=args.ckpt_dir
        )
    except ConfigError as err:
        raise ConfigError(f"{config_path}: {err}") from None
    if args.out:  # with the per-step losses, to see whether and where training lost its footing
        write_atomic(args.out, json.dumps({**result, "config": str(config_path)}, indent=2))
    return 0
