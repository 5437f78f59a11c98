"""Held-out quality of some children of a run while its gkd stage is still going (evaluate waits for all of them).

Evaluates RUN_DIR/<stage>/<child> (stage `gkd` by default, `realize` for the untrained child) and the parent on the
held-out test half with `evaluate`'s quality metrics: top-1 accuracy and its retention, KL to the parent, perplexity.
With --time it also times the parent and the children side by side in a fresh process, as `evaluate` does, and sets
the measured speed-up beside the search's prediction. Pause a training run on the same cores while it times
(`kill -STOP -PGID`, then `kill -CONT -PGID`): the two would share the CPU.

Usage: python packages/puzzle/scripts/child_quality.py RUN_DIR CHILD [CHILD ...] [--stage gkd|realize] [--time]
       [--config CONFIG] [--threads 2]
CONFIG defaults to RUN_DIR/config.json (written by `puzzle run` and `puzzle bench`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from puzzle.evaluate import measure_in_fresh_process, quality_metrics
from puzzle.pipeline import ConfigError, Pipeline, load_config, run_config_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("children", nargs="+")
    ap.add_argument("--stage", choices=("gkd", "realize"), default="gkd")
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--time", action="store_true", help="also time parent and children (evaluate's scenario)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    missing = [c for c in args.children if not (args.run_dir / args.stage / c / "config.json").exists()]
    if missing:
        raise SystemExit(f"no finished {args.stage} child {missing} under {args.run_dir / args.stage}")
    try:
        config = load_config(run_config_path(args.run_dir, args.config))
    except ConfigError as err:
        raise SystemExit(str(err)) from None
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
    if args.time:
        print_speed(pipe, args.run_dir, args.stage, args.children)


def print_speed(pipe: Pipeline, run_dir: Path, stage: str, children: list[str]) -> None:
    """Measured tokens/s and speed-up over the parent, and the search's predicted runtime over the measured one,
    both relative to the parent (so the machine's drift since the measure stage cancels)."""
    ecfg = pipe.config["evaluate"]
    costs = measure_in_fresh_process(pipe.parent_path, {c: run_dir / stage / c for c in children}, pipe.scenario(),
                                     device=pipe.device, warmup=ecfg["warmup"], iters=ecfg["iters"])
    solutions = pipe.solutions()
    predicted_parent = pipe.cost_table().calibration["parent_measured"]["runtime_ms"]
    base = costs["parent"]
    print(f"timed in a fresh process: {pipe.scenario()}")
    for name, c in costs.items():
        line = (f"{name:28s} {c['tokens_per_s']:.1f} tokens/s  {c['runtime_ms']:.1f} ms  "
                f"speed-up {c['tokens_per_s'] / base['tokens_per_s']:.3f}")
        if name in solutions:
            predicted = solutions[name]["predicted"]["runtime_ms"]
            ratio = (predicted / predicted_parent) / (c["runtime_ms"] / base["runtime_ms"])
            line += f"  predicted {predicted:.1f} ms, predicted/measured vs parent {ratio:.3f}"
        print(line)


if __name__ == "__main__":
    main()
