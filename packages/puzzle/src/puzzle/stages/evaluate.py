"""evaluate: the parent and the distilled children side by side -> evaluate/evaluate.json."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from puzzle.stages.measure import cost_table

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    solutions = pipe.solutions()
    results = evaluate_children(pipe, "gkd", list(solutions))
    for name, rec in solutions.items():
        results[name].update(
            {
                "method": rec["method"],
                "target": rec["target"],
                "target_tokens_per_s": rec["target_tokens_per_s"],
            }
        )
    parent_tps = cost_table(pipe).calibration["parent_measured"]["tokens_per_s"]
    missed = flag_missed_targets(results, parent_tps)
    pipe.run.write_json("evaluate/evaluate.json", results)
    pipe.log(format_results(results))
    for line in missed:
        pipe.log(f"[evaluate] WARNING: {line}")
    if any("heldout" in r for r in results.values()):
        pipe.log(format_heldout(results))
    return {}


# the cost model's promise (README, "where the targets stand"): a child's measured speed-up within 10% of its target
MISS_TOLERANCE = 0.10


def flag_missed_targets(results: dict[str, dict[str, Any]], parent_tps: float) -> list[str]:
    """Mark each child with its target speed-up (its target tokens/s over the parent's tokens/s that the measure
    stage timed: the figure its budget was computed from) and `missed_target` when its measured speed-up falls more
    than MISS_TOLERANCE short of it; one line per miss, saying what to do."""
    lines = []
    for name, r in results.items():
        if "target_tokens_per_s" not in r:
            continue
        target = r["target_tokens_per_s"] / parent_tps
        r["target_speedup"] = target
        r["missed_target"] = bool(r["speedup"] < (1 - MISS_TOLERANCE) * target)
        if r["missed_target"]:
            lines.append(
                f"{name} measured {r['speedup']:.2f}x the parent's speed against its {target:.2f}x target "
                f"({1 - r['speedup'] / target:.0%} short; predicted/measured {r.get('predicted_over_measured', float('nan')):.2f}). "
                "Its costs were probably timed on a busy machine: measure again on an idle one (or with fewer "
                "--threads) before taking it for a child at its target"
            )
    return lines


def predicted_runtimes(pipe: Pipeline) -> dict[str, float]:
    """The search's predicted runtime (ms) of every child, and the parent's as timed by the measure stage."""
    predicted = {name: rec["predicted"]["runtime_ms"] for name, rec in pipe.solutions().items()}
    predicted["parent"] = cost_table(pipe).calibration["parent_measured"]["runtime_ms"]
    return predicted


def evaluate_children(pipe: Pipeline, stage: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The parent and the children RUN_DIR/<stage>/<name> side by side: held-out quality, speed timed in a fresh
    process (the config's scenario, warm-up and iterations) and the search's predicted runtime over the measured
    one. The evaluate stage and `puzzle child-quality --time` both read their figures from here."""
    from puzzle.evaluate import evaluate_models, measure_in_fresh_process

    parent, _ = pipe.parent()
    ecfg = pipe.config["evaluate"]
    batches = pipe.datamodule().heldout_batches("test", ecfg["tokens"])
    pipe.log("[evaluate] timing the parent and the children in a fresh process")
    costs = measure_in_fresh_process(
        pipe.parent_path,
        {name: pipe.run.path(f"{stage}/{name}") for name in names},
        pipe.scenario(),
        device=pipe.device,
        warmup=ecfg["warmup"],
        iters=ecfg["iters"],
    )
    children = {name: pipe.load_child(stage, name) for name in names}
    results = evaluate_models(
        children,
        parent,
        batches,
        pipe.scenario(),
        device=pipe.device,
        predicted_runtime_ms=predicted_runtimes(pipe),
        progress=pipe.progress,
        costs=costs,
    )
    if "heldout" in pipe.config["data"]:  # the user's held-out sets, each reported on its own
        from puzzle.evaluate import add_heldout_sets

        dm = pipe.datamodule()
        first, *others = dm.heldout_names
        add_heldout_sets(
            results,
            {"parent": parent, **children},
            parent,
            first,
            {name: dm.heldout_batches("test", ecfg["tokens"], name) for name in others},
            device=pipe.device,
            progress=pipe.progress,
        )
    return results


def format_heldout(results: Mapping[str, Mapping[str, Any]]) -> str:
    """One table per held-out set: each model's quality on that set's test half."""
    sets = next(iter(results.values()))["heldout"]
    tables = []
    for set_name in sets:
        lines = [f"held-out set {set_name!r} ({sets[set_name]['tokens']} tokens)"]
        lines.append(f"{'model':<22}{'top1 acc':>9}{'retain':>8}{'agree':>7}{'KL':>8}{'ppl':>9}")
        for name, r in results.items():
            q = r["heldout"][set_name]
            lines.append(
                f"{name:<22}{q['top1_accuracy']:>9.4f}{q['top1_accuracy_retention']:>8.3f}"
                f"{q['top1_agreement']:>7.3f}{q['kl']:>8.4f}{q['perplexity']:>9.2f}"
            )
        tables.append("\n".join(lines))
    return "\n\n".join(tables)


def format_results(results: Mapping[str, Mapping[str, float]]) -> str:
    """One line per model: quality and measured throughput."""
    head = (
        f"{'model':<22}{'top1 acc':>9}{'retain':>8}{'agree':>7}{'KL':>8}{'ppl':>9}{'tok/s':>9}{'speedup':>8}"
        f"{'pred/meas':>10}"
    )
    lines = [head]
    for name, r in results.items():
        lines.append(
            f"{name:<22}{r['top1_accuracy']:>9.4f}{r['top1_accuracy_retention']:>8.3f}"
            f"{r['top1_agreement']:>7.3f}{r['kl']:>8.4f}{r['perplexity']:>9.2f}"
            f"{r['measured_tokens_per_s']:>9.1f}{r['speedup']:>8.3f}"
            f"{r.get('predicted_over_measured', float('nan')):>10.3f}"
        )
    return "\n".join(lines)
