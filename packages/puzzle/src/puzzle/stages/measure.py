"""measure: every block's runtime, memory and parameters in the config's scenario -> measure/costs.json."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

import torch

from benchmarks.yardstick import device_name
from effinfer_core.machine import sample_load
from effinfer_core.run_folder import inputs_hash
from puzzle.costs import CostTable
from puzzle.probes import build_cost_table
from puzzle.timing import MachineBusyError, timing_spread

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.modeling_decilm import build_attention_block, build_ffn_block
    from puzzle.parent import load_parent

    mcfg = pipe.config["measure"]
    if mcfg["check_machine"]:
        check_load(pipe)
    parent, _ = load_parent(pipe.parent_path)  # a fresh copy: measuring casts it to the scenario dtype
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
    cal = table.calibration
    if mcfg["check_machine"]:  # before costs.json is written: a distorted table must not reach the search
        check_spread(cal["parent_measured"]["rounds_ms"], mcfg["max_spread"], torch.get_num_threads())
    pipe.run.write_json("measure/costs.json", {**table.to_dict(), "device_name": device_name(pipe.device)})
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


def check_load(pipe: Pipeline) -> None:
    """Stop before timing when other processes hold the cores this process's threads need (CPU only)."""
    if pipe.device.type != "cpu":
        return
    load = sample_load(torch.get_num_threads())
    pipe.log(f"[measure] {load.describe()}")
    if load.busy:
        raise MachineBusyError(
            f"{load.describe()}: block costs timed now would be distorted, and every budget computed from them "
            f"wrong (a child that misses its speed-up); {load.advice()}. To measure anyway, set "
            "measure.check_machine: false"
        )


def check_spread(rounds_ms: list[float], max_spread: float, threads: int) -> None:
    """Stop when the parent's repeated timings disagree beyond `max_spread` (an unstable machine)."""
    spread = timing_spread(rounds_ms)
    if spread > max_spread:
        raise MachineBusyError(
            f"the parent's {len(rounds_ms)} timings disagree: the slowest quarter took {spread:.2f}x the fastest "
            f"quarter (at most {max_spread:g} is trusted), so the machine's speed changed while it measured and "
            f"the block costs cannot be trusted. Nothing was written; measure again on an idle machine, with "
            f"fewer threads than the {threads} used (--threads), or raise measure.max_spread"
        )


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
