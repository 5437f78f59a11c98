"""Held-out quality of some children of a run while its gkd stage is still going (evaluate waits for all of them).

Evaluates RUN_DIR/<stage>/<child> (stage `gkd` by default, `realize` for the untrained child) and the parent on the
held-out test half with `evaluate`'s quality metrics: top-1 accuracy and its retention, KL to the parent, perplexity.
No timing: throughput is measured by the evaluate stage, side by side.

Usage: python packages/puzzle/scripts/child_quality.py RUN_DIR CHILD [CHILD ...] [--stage gkd|realize]
       [--config CONFIG] [--threads 2]
CONFIG defaults to RUN_DIR/config.json (written by `puzzle run`; give it for a run started by `puzzle bench`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from puzzle.evaluate import quality_metrics
from puzzle.pipeline import Pipeline, load_config


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("children", nargs="+")
    ap.add_argument("--stage", choices=("gkd", "realize"), default="gkd")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [c for c in args.children if not (args.run_dir / args.stage / c / "config.json").exists()]
    if missing:
        raise SystemExit(f"no finished {args.stage} child {missing} under {args.run_dir / args.stage}")
    config_path = args.config or args.run_dir / "config.json"
    if not config_path.exists():
        raise SystemExit(f"{config_path} does not exist: give --config, the config the run was started with")
    config = load_config(config_path)
    pipe = Pipeline(config, args.run_dir, progress=False)
    parent, _ = pipe.parent()
    batches = pipe.datamodule().heldout_batches("test", config["evaluate"]["tokens"])
    models = {"parent": parent, **{c: pipe.load_child(args.stage, c) for c in args.children}}
    metrics = quality_metrics(models, parent, batches, device=pipe.device, progress=False)
    parent_top1 = metrics["parent"]["top1_accuracy"]
    print(f"{sum(b.numel() for b in batches)} held-out tokens, {args.stage} children")
    for name, m in metrics.items():
        print(f"{name:28s} top-1 {m['top1_accuracy']:.4f}  retention {m['top1_accuracy'] / parent_top1:.3f}  "
              f"KL {m['kl']:.4f}  ppl {m['perplexity']:.2f}")


if __name__ == "__main__":
    main()
