"""Re-time a finished run's parent and children side by side in a fresh process, against two cost models.

Runs whose `evaluate` stage timed the models in the training process (before it used a subprocess) can be re-timed
here: on the 2-core VM this repo was built on, one child measured 1.34x there and 1.48-1.53x in a fresh process
(SmolLM2, configs/cpu.yaml). The script also re-measures the costs and compares two cost models, relative to the
parent measured in the same window:
    probes   the pipeline's cost model (costs.build_cost_table, with the config's measure.probes)
    swaps    the parent with one variant in every layer's attention (or FFN) slot; a child's runtime is the parent's
             plus the sum of its layers' measured differences (the working set stays parent-sized)

Usage: python packages/puzzle/scripts/remeasure.py RUN_DIR [--config CONFIG] [--threads 2]
RUN_DIR is the run folder (holding search/ and gkd/); CONFIG defaults to RUN_DIR/config.json (written by
`puzzle run` and `puzzle bench`).
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from puzzle.block_config import BlockConfig
from puzzle.config import ConfigError, load_config, run_config_path
from puzzle.costs import build_cost_table, measure_generations
from puzzle.modeling_decilm import DeciLMForCausalLM, build_attention_block, build_ffn_block
from puzzle.parent import load_parent
from puzzle.pipeline import Pipeline


def swap_deltas(parent: DeciLMForCausalLM, pipe: Pipeline, device: torch.device, iters: int) -> dict:
    """(kind, variant name) -> (runtime with the variant in every layer - parent) / L / parent, timed side by side."""
    pa, L, scenario = parent.config.parent_block_config(), parent.config.num_hidden_layers, pipe.scenario()
    deltas = {}
    for kind, variants in (("attention", pipe.attention_variants()), ("ffn", pipe.ffn_variants())):
        for v in variants:
            if v in (pa.attention, pa.ffn):
                continue
            model = copy.deepcopy(parent)
            for i, layer in enumerate(model.model.layers):
                if kind == "attention":
                    model.replace_block(
                        i, BlockConfig(v, pa.ffn), build_attention_block(model.config, i, v), layer.ffn_block
                    )
                else:
                    model.replace_block(
                        i, BlockConfig(pa.attention, v), layer.attn_block, build_ffn_block(model.config, v)
                    )
            r = measure_generations({"parent": parent, "swap": model}, scenario, device=device, iters=iters)
            deltas[kind, v.name] = (r["swap"]["runtime_ms"] / r["parent"]["runtime_ms"] - 1) / L
    return deltas


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--config", type=Path, default=None)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--iters", type=int, default=5)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        config = load_config(run_config_path(args.run_dir, args.config))
    except ConfigError as err:
        raise SystemExit(str(err)) from None
    pipe = Pipeline(config, args.run_dir, progress=False)
    device, scenario = pipe.device, pipe.scenario()
    parent, _ = load_parent(pipe.parent_path)
    solutions = pipe.solutions()
    table = build_cost_table(
        parent,
        pipe.attention_variants(),
        pipe.ffn_variants(),
        scenario,
        build_attention=build_attention_block,
        build_ffn=build_ffn_block,
        device=device,
        probes=config["measure"]["probes"],
        iters=args.iters,
        progress=False,
    )
    deltas = swap_deltas(parent, pipe, device, args.iters)
    children = {name: DeciLMForCausalLM.from_pretrained(args.run_dir / "gkd" / name) for name in solutions}
    measured = measure_generations(
        {"parent": parent, **children}, scenario, device=device, warmup=2, iters=args.iters
    )
    parent_ms, parent_table_ms = (
        measured["parent"]["runtime_ms"],
        table.calibration["parent_measured"]["runtime_ms"],
    )
    print(
        f"parent {measured['parent']['tokens_per_s']:.1f} tokens/s; predicted / measured, both relative to the parent:"
    )
    print(f"{'child':<18}{'speedup':>9}{'probes':>9}{'swaps':>9}")
    for name, sol in solutions.items():
        blocks = [tuple(b.split("+")) for b in sol["names"]]
        rel = measured[name]["runtime_ms"] / parent_ms
        probes = table.predict(blocks)["runtime_ms"] / parent_table_ms
        swaps = 1 + sum(deltas.get(("attention", a), 0.0) + deltas.get(("ffn", f), 0.0) for a, f in blocks)
        print(f"{name:<18}{1 / rel:>9.3f}{probes / rel:>9.3f}{swaps / rel:>9.3f}")
    print(json.dumps({name: m["tokens_per_s"] for name, m in measured.items()}))


if __name__ == "__main__":
    main()
