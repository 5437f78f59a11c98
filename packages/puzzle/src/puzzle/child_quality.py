"""Held-out quality of some children of a run while its gkd stage is still going (evaluate waits for all of them).

Evaluates RUN_DIR/<stage>/<child> (stage `gkd` by default, `realize` for the untrained child) and the parent on the
held-out test half with `evaluate`'s quality metrics: top-1 accuracy and its retention, KL to the parent, perplexity.
With --time it also times the parent and the children side by side in a fresh process and gives the speed-up and
the predicted/measured runtime relative to the parent, through `evaluate`'s own code. Pause a training run on the
same cores while it times (`kill -STOP -PGID`, then `kill -CONT -PGID`): the two would share the CPU.

Usage: puzzle child-quality RUN_DIR CHILD [CHILD ...] [--stage gkd|realize] [--time] [--config CONFIG] [--threads 2]
CONFIG defaults to RUN_DIR/config.json (written by `puzzle run` and `puzzle bench`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from puzzle.config import ConfigError, load_config, run_config_path
from puzzle.evaluate import quality_metrics
from puzzle.pipeline import Pipeline
from puzzle.stages.evaluate import evaluate_children


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("children", nargs="+", metavar="CHILD")
    ap.add_argument("--stage", choices=("gkd", "realize"), default="gkd", help="default %(default)s")
    ap.add_argument("--config", type=Path, default=None, help="default: RUN_DIR/config.json")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--time", action="store_true", help="also time parent and children (evaluate's scenario)")


def main(args: argparse.Namespace) -> int:
    """`puzzle child-quality`: ConfigError for bad input (the CLI prints it and exits with 2)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [c for c in args.children if not (args.run_dir / args.stage / c / "config.json").exists()]
    if missing:
        raise ConfigError(f"no finished {args.stage} child {missing} under {args.run_dir / args.stage}")
    config = load_config(run_config_path(args.run_dir, args.config))
    pipe = Pipeline(config, args.run_dir, progress=False)
    batches = pipe.datamodule().heldout_batches("test", config["evaluate"]["tokens"])
    if args.time:
        results = evaluate_children(pipe, args.stage, args.children)
    else:
        parent, _ = pipe.parent()
        children = {c: pipe.load_child(args.stage, c) for c in args.children}
        results = quality_metrics(
            {"parent": parent, **children}, parent, batches, device=pipe.device, progress=False
        )
    parent_top1 = results["parent"]["top1_accuracy"]
    print(
        f"{sum(b.numel() for b in batches)} held-out tokens, {args.stage} children"
        + (f", timed in a fresh process: {pipe.scenario()}" if args.time else "")
    )
    for name, r in results.items():
        line = (
            f"{name:24s} top-1 {r['top1_accuracy']:.4f}  retention {r['top1_accuracy'] / parent_top1:.3f}  "
            f"KL {r['kl']:.4f}  ppl {r['perplexity']:.2f}"
        )
        if args.time:
            line += f"  {r['measured_tokens_per_s']:.1f} tokens/s  speed-up {r['speedup']:.3f}"
            # a child realised by an earlier search of the run folder has no prediction in the current one
            if "predicted_over_measured_vs_parent" in r:
                line += f"  pred/meas vs parent {r['predicted_over_measured_vs_parent']:.3f}"
        print(line)
    return 0
