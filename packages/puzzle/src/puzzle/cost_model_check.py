"""How well do two cost models predict the runtime of children they have never seen? Random children, timed.

Measures the cost table of a config's search space and scenario (`probes.build_cost_table`, as the measure stage
does), draws random heterogeneous children of that space (random weights: the runtime of a dense fp32 model does
not depend on them), times them side by side with the parent in this process (`timing.measure_generations`,
interleaved rounds; a child's measured runtime relative to the parent is the median of its round-by-round ratios)
and prints each child's predicted / measured runtime, both relative to the parent, under
    blocks      measure.probes "blocks": skeleton + the sum of each layer's block, every block timed whole
    subblocks   measure.probes "subblocks" (the default): skeleton + each non-no-op subblock's lone probe + a
                per-subblock overhead (parent - skeleton - L * (parent attention + parent FFN)) / 2L
Both models predict the parent exactly; they differ on layers whose block is not the parent's. Both come from the
same probes (the subblocks model's lone probes are the blocks `attention+no_op` and `no_op+ffn`), so the space must
hold the no-op attention and the no-op FFN.

Child k of N keeps the parent's block in each layer with probability k / (N + 1) and otherwise takes a block drawn
uniformly from the space, so the children spread from much faster than the parent to close to it.

Usage: puzzle cost-model-check CONFIG [--children 8] [--seed 0] [--iters 10] [--threads 2] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import statistics
import tempfile
from pathlib import Path

import torch

from effinfer_core.atomic import write_atomic
from puzzle.block_config import BlockConfig
from puzzle.config import ConfigError, load_config
from puzzle.modeling_decilm import build_attention_block, build_ffn_block
from puzzle.parent import load_parent
from puzzle.pipeline import Pipeline
from puzzle.probes import additive_times, build_cost_table, with_blocks
from puzzle.timing import measure_generations, runtime_ratio


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("config", type=Path, help="run config, YAML or JSON")
    ap.add_argument("--children", type=int, default=8, help="random children to time (default %(default)s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--iters", type=int, default=10, help="rounds of side-by-side timing (default %(default)s)"
    )
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, default=None, help="write the rows and the cost table as JSON here")


def main(args: argparse.Namespace) -> int:
    """`puzzle cost-model-check`: ConfigError for bad input (the CLI prints it and exits with 2)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_config(args.config)
    except ConfigError as err:
        raise ConfigError(f"{args.config}: {err}") from None
    with tempfile.TemporaryDirectory() as tmp:  # the pipeline binds a run folder; nothing of it is kept
        pipe = Pipeline(config, tmp, progress=True)
        attention, ffn, scenario = pipe.attention_variants(), pipe.ffn_variants(), pipe.scenario()
    if not (any(a.no_op for a in attention) and any(f.no_op for f in ffn)):
        raise ConfigError(
            "the subblocks model needs lone-subblock probes: the search space must allow no-op "
            "attention and no-op FFN (attention_no_op: true, ffn_no_op: true)"
        )
    parent, _ = load_parent(pipe.parent_path)
    parent.eval()
    pb = parent.config.parent_block_config()
    table = build_cost_table(
        parent,
        attention,
        ffn,
        scenario,
        build_attention=build_attention_block,
        build_ffn=build_ffn_block,
        device=pipe.device,
        probes="blocks",
        iters=config["measure"]["iters"],
        warmup=config["measure"]["warmup"],
    )
    # the subblocks model from the same probes: its lone-subblock probes are the blocks "a+no_op" and "no_op+f"
    space = [BlockConfig(a, f) for a in attention for f in ffn]
    cal = table.calibration
    added = additive_times(
        cal["probe_times"],
        space,
        pb,
        cal["parent_measured"],
        cal["skeleton_measured"],
        parent.config.num_hidden_layers,
        scenario,
    )
    additive = dataclasses.replace(table, blocks={n: {**b, **added[n]} for n, b in table.blocks.items()})
    rng = random.Random(args.seed)
    children, archs = {}, {}
    for k in range(1, args.children + 1):
        keep = k / (args.children + 1)
        blocks = [
            pb if rng.random() < keep else rng.choice(space) for _ in range(parent.config.num_hidden_layers)
        ]
        children[f"child-{k}"] = with_blocks(parent, blocks, build_attention_block, build_ffn_block)
        archs[f"child-{k}"] = [(b.attention.name, b.ffn.name) for b in blocks]
    measured = measure_generations(
        {"parent": parent, **children}, scenario, device=pipe.device, warmup=2, iters=args.iters
    )
    parent_pred = table.calibration["parent_measured"]["runtime_ms"]
    print(
        f"parent {measured['parent']['tokens_per_s']:.2f} tokens/s ({scenario}); "
        "predicted / measured runtime, both relative to the parent:"
    )
    print(f"{'child':<10}{'speedup':>9}{'blocks':>9}{'subblocks':>11}  blocks differing from the parent's")
    rows = []
    for name, arch in archs.items():  # arch: per layer (attention name, FFN name)
        rel = runtime_ratio(measured, name, "parent")
        row = {
            "child": name,
            "blocks": ["+".join(b) for b in arch],
            "speedup": 1 / rel,
            "blocks_model": table.predict(arch)["runtime_ms"] / parent_pred / rel,
            "subblocks_model": additive.predict(arch)["runtime_ms"] / parent_pred / rel,
        }
        rows.append(row)
        print(
            f"{name:<10}{row['speedup']:>9.3f}{row['blocks_model']:>9.3f}{row['subblocks_model']:>11.3f}  "
            f"{sum(b != pb.name for b in row['blocks'])}"
        )
    for model in ("blocks_model", "subblocks_model"):
        errors = [abs(r[model] - 1) for r in rows]
        print(f"{model}: mean |error| {statistics.mean(errors):.3f}, max {max(errors):.3f}")
    print(
        "block time / its two subblocks' alone: "
        + ", ".join(f"{n} {r:.3f}" for n, r in table.calibration["additivity"].items())
    )
    if args.out:  # through a temporary file: a killed run leaves no half-written file
        write_atomic(
            args.out,
            json.dumps(
                {
                    "config": str(args.config),
                    "scenario": scenario.to_dict(),
                    "measured": measured,
                    "rows": rows,
                    "costs": table.to_dict(),
                },
                indent=2,
            ),
        )
    return 0
