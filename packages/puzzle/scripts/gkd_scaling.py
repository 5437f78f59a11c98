"""Held-out quality of one realised child as its global distillation goes on: how far do more GKD tokens take it?

Trains RUN_DIR/realize/CHILD from the parent with the run config's GKD settings for --tokens tokens and evaluates
the child on the held-out test half (the config's `evaluate.tokens`) before training and every --eval-every tokens.
The learning-rate schedule spans the whole --tokens budget, so a mid-run figure is that of a run still at a higher
learning rate, not of a shorter run. Nothing in RUN_DIR is changed; the checkpoints go to a temporary folder.

Usage: python packages/puzzle/scripts/gkd_scaling.py RUN_DIR CHILD [--tokens N] [--eval-every N] [--threads 2]
       [--config CONFIG] [--gkd KEY=VALUE ...] [--out FILE.json]
CONFIG defaults to RUN_DIR/config.json (written by `puzzle run` and `puzzle bench`).
`--gkd lr=5e-4 --gkd cosine_weight=0` overrides the config's GKD settings for a sweep. --out FILE.json gets the
held-out rows and the per-step training losses.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from puzzle.evaluate import quality_metrics
from puzzle.gkd import run_gkd
from puzzle.pipeline import ConfigError, Pipeline, load_config, run_config_path


class HeldOutEval(L.Callback):
    """Evaluates the student on fixed held-out batches every `every` optimizer steps (and at step 0 and the end)."""

    def __init__(self, parent: torch.nn.Module, batches: list[torch.Tensor], every: int, tokens_per_step: int,
                 parent_top1: float):
        self.parent, self.batches, self.every = parent, batches, every
        self.tokens_per_step, self.parent_top1 = tokens_per_step, parent_top1
        self.rows: list[dict[str, float]] = []
        self.start = time.perf_counter()

    def evaluate(self, student: torch.nn.Module, step: int) -> None:
        if self.rows and self.rows[-1]["step"] == step:
            return
        student.eval()
        m = quality_metrics({"child": student}, self.parent, self.batches, device=self.parent.device,
                            progress=False)["child"]
        student.train()
        retention = m["top1_accuracy"] / self.parent_top1 if self.parent_top1 else float("nan")
        row = {"step": step, "tokens": step * self.tokens_per_step, "top1_accuracy": m["top1_accuracy"],
               "retention": retention, "kl": m["kl"], "perplexity": m["perplexity"],
               "elapsed_s": time.perf_counter() - self.start}
        self.rows.append(row)
        print(f"{row['tokens']:>9} tokens  top-1 {row['top1_accuracy']:.4f}  retention {row['retention']:.3f}  "
              f"KL {row['kl']:.4f}  ppl {row['perplexity']:.2f}  ({row['elapsed_s']:.0f} s)", flush=True)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(pl_module.student, trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: object) -> None:
        if trainer.global_step % self.every == 0:
            self.evaluate(pl_module.student, trainer.global_step)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.evaluate(pl_module.student, trainer.global_step)


def gkd_overrides(items: list[str]) -> dict[str, str]:
    """`KEY=VALUE` strings as a dict; load_config checks the keys and reads the values as the defaults' types."""
    pairs = [item.partition("=") for item in items]
    bad = [item for item, (_, sep, _) in zip(items, pairs, strict=True) if not sep]
    if bad:
        raise SystemExit(f"--gkd {bad[0]!r}: expected KEY=VALUE, e.g. --gkd lr=5e-4")
    return {key: value for key, _, value in pairs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("child", help="a child of the run (a folder under RUN_DIR/realize)")
    ap.add_argument("--tokens", type=int, default=524_288)
    ap.add_argument("--eval-every", type=int, default=131_072)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--gkd", action="append", default=[], metavar="KEY=VALUE",
                    help="override one of the config's gkd settings (repeatable)")
    ap.add_argument("--out", type=Path, default=None, help="write the rows as JSON here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if not (args.run_dir / "realize" / args.child).is_dir():
        raise SystemExit(f"no realised child {args.child!r} under {args.run_dir / 'realize'}; "
                         "run the pipeline's realize stage first")
    try:
        config_path = run_config_path(args.run_dir, args.config)
        config = load_config(config_path, gkd=gkd_overrides(args.gkd) or None)
    except ConfigError as err:
        raise SystemExit(f"{config_path}: {err}") from None
    pipe = Pipeline(config, args.run_dir, progress=False)
    parent, _ = pipe.parent()
    data = pipe.datamodule()
    batches = data.heldout_batches("test", config["evaluate"]["tokens"])
    parent_top1 = quality_metrics({"parent": parent}, parent, batches, device=pipe.device,
                                  progress=False)["parent"]["top1_accuracy"]
    print(f"parent top-1 {parent_top1:.4f} on {sum(b.numel() for b in batches)} held-out tokens", flush=True)
    student = pipe.load_child("realize", args.child)
    gkd = {k: v for k, v in config["gkd"].items() if k not in ("token_budget", "checkpoint_every")}
    callback = HeldOutEval(parent, batches, max(1, args.eval_every // data.tokens_per_batch), data.tokens_per_batch,
                           parent_top1)
    with tempfile.TemporaryDirectory() as ckpt_dir:
        metrics = run_gkd(student, parent, data, token_budget=args.tokens, ckpt_dir=ckpt_dir,
                          checkpoint_every=10**9, seed=config["seed"],
                          trainer_kwargs=pipe.trainer_kwargs(f"[gkd-scaling] {args.child}"), callbacks=[callback],
                          **gkd)
    if args.out:  # with the per-step losses, to see whether and where training lost its footing
        args.out.write_text(json.dumps({"child": args.child, "config": str(config_path), "gkd": gkd,
                                        "parent_top1": parent_top1, "rows": callback.rows,
                                        "history": metrics["history"]}, indent=2))


if __name__ == "__main__":
    main()
