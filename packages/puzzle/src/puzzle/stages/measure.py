"""measure: every block's runtime, memory and parameters in the config's scenario -> measure/costs.json."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.yardstick import device_name
from effinfer_core.run_folder import inputs_hash
from puzzle.costs import CostTable
from puzzle.probes import build_cost_table

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.modeling_decilm import build_attention_block, build_ffn_block
    from puzzle.parent import load_parent

    parent, _ = load_parent(pipe.parent_path)  # a fresh copy: measuring casts it to the scenario dtype
    mcfg = pipe.config["measure"]
    table = build_cost_table(
        parent,
        pipe.attention_variants(),
        pipe.ffn_variants(),
        pipe.scenario(),
        build_attention=build_attention_block,
        build_ffn=build_ffn_block,
        device=pipe.device,
        probes=mcfg["probes"],
        warmup=mcfg["warmup"],
        iters=mcfg["iters"],
        progress=pipe.progress,
    )
    pipe.run.write_json("measure/costs.json", {**table.to_dict(), "device_name": device_name(pipe.device)})
    cal = table.calibration
    notes = [
        f"parent {cal['parent_measured']['tokens_per_s']:.1f} tokens/s measured",
        f"skeleton (all blocks no-op) {table.skeleton['tokens_per_s']:.1f} tokens/s",
        f"{len(table.blocks)} blocks from {mcfg['probes']} probes",
    ]
    if "sum_of_parts_over_measured" in cal:
        notes.append(
            f"sum of the parent's lone subblocks = {cal['sum_of_parts_over_measured']:.3f} x measured"
        )
    if mcfg["probes"] == "blocks" and cal["additivity"]:
        notes.append(
            "block time / its two subblocks' alone: "
            + ", ".join(f"{name} {r:.3f}" for name, r in cal["additivity"].items())
        )
    pipe.log("[measure] " + "; ".join(notes))
    return {}


def cost_table(pipe: Pipeline) -> CostTable:
    """The measure stage's cost table."""
    d = pipe.run.read_json("measure/costs.json")
    d.pop("device_name", None)
    return CostTable.from_dict(d)


def threads_hint(pipe: Pipeline) -> str:
    """Why a finished run looks undone from here when only the CPU thread count differs from its measure stage's
    (that count is in measure's hash, so in every later stage's)."""
    entry = pipe.run.stage_entry("measure")
    now = torch.get_num_threads()
    if entry is None or pipe.device.type != "cpu" or pipe.run.is_done("measure", pipe.inputs_hash("measure")):
        return ""
    for n in range(1, max(os.cpu_count() or 1, now) + 1):
        if inputs_hash(pipe.inputs("measure", threads=n)) == entry["inputs_hash"]:
            return (
                f" (this run folder's costs were measured with {n} CPU threads and this process has {now}: "
                f"pass --threads {n}, or measure again with {now})"
            )
    return ""
