"""`puzzle search --sweep`: the search's Pareto front over a range of runtime budgets, as JSON, Markdown and a plot.

A tool over finished stages (score and measure): it solves the same problem as the search stage (the Puzzle
children's, i.e. with search.exclude_blocks applied) once per budget through `puzzle.sweep.sweep`, and writes
search/sweep.json, search/pareto.md and search/pareto.png. It marks no stage done and changes no stage's files.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from puzzle.config import OBJECTIVES, ConfigError

if TYPE_CHECKING:
    from puzzle.pipeline import Pipeline

DEFAULT_BUDGETS = "0.40:0.90:0.02"


def parse_budgets(spec: str) -> list[float]:
    """START:STOP:STEP -> ascending fractions, STOP included when the steps land on it within rounding."""
    parts = spec.split(":")
    try:
        if len(parts) != 3:
            raise ValueError
        start, stop, step = (float(p) for p in parts)
    except ValueError:
        raise ValueError(
            f"--budgets must be START:STOP:STEP (e.g. {DEFAULT_BUDGETS}), got {spec!r}"
        ) from None
    if not (0 < start <= stop) or not step > 0:
        raise ValueError(f"--budgets {spec!r}: need 0 < START <= STOP and STEP > 0")
    n = int((stop - start) / step + 1e-9)  # the epsilon keeps STOP when float steps fall just short of it
    return [round(start + i * step, 10) for i in range(n + 1)]


def run_sweep(pipe: Pipeline, fractions: Sequence[float]) -> dict[str, Any]:
    """Solve every budget, write the three files and return sweep.json's content."""
    import warnings

    from puzzle.stages.measure import cost_table
    from puzzle.stages.search import problem
    from puzzle.sweep import pareto_front, sweep

    pipe.require(
        "search"
    )  # score and measure done for this config, or a StageNotReadyError naming the one to run
    full = problem(pipe)
    table = cost_table(pipe)
    try:  # as the search stage does for the Puzzle children
        allowed = full.without(pipe.config["search"]["exclude_blocks"])
    except ValueError as e:
        raise ConfigError(f"search.exclude_blocks: {e}") from None
    parent_ms = float(table.calibration["parent_measured"]["runtime_ms"])
    parent_idx = full.variant_names[0].index(pipe.parent_block().name)
    parent = full.solution_for([parent_idx] * full.num_layers)
    fractions = sorted(fractions)
    budgets = [{"runtime_ms": f * parent_ms} for f in fractions]
    scfg = pipe.config["search"]
    with warnings.catch_warnings():  # infeasible budgets are reported in sweep.json, not as warnings
        warnings.simplefilter("ignore")
        sols = sweep(allowed, budgets, solver=scfg["solver"], time_limit_s=scfg["time_limit_s"])
    sense = OBJECTIVES[pipe.config["score"]["objective"]]
    by_budget = {round(s.budgets["runtime_ms"], 9): s for s in sols}
    points: list[dict[str, Any]] = []
    for f, b in zip(fractions, budgets, strict=True):
        s = by_budget.get(round(b["runtime_ms"], 9))
        if s is None:
            continue
        points.append(
            {
                "fraction": f,
                "runtime_budget_ms": b["runtime_ms"],
                "predicted_runtime_ms": s.costs["runtime_ms"],
                "predicted_tokens_per_s": table.scenario.tokens_per_s(s.costs["runtime_ms"]),
                "objective": s.objective,
                "names": s.names,
                "solve_time_s": s.solve_time_s,
                "optimal": s.optimal,
            }
        )
    # cost = runtime (lower is faster); the front is sorted by runtime, i.e. from fastest to slowest
    front = pareto_front([(p["predicted_runtime_ms"], p["objective"]) for p in points], score_sense=sense)
    # several budgets often pick the same child: the front lists it once, at its smallest budget
    first: dict[tuple[str, ...], float] = {}
    for p in points:
        first.setdefault(tuple(p["names"]), p["fraction"])
        if first[tuple(p["names"])] != p["fraction"]:
            p["same_child_as_fraction"] = first[tuple(p["names"])]
    front = [i for i in front if "same_child_as_fraction" not in points[i]]
    for i, p in enumerate(points):
        p["on_front"] = i in front
    out: dict[str, Any] = {
        "objective": pipe.config["score"]["objective"],
        "score_sense": sense,
        "parent": {
            "measured_runtime_ms": parent_ms,
            "predicted_runtime_ms": parent.costs["runtime_ms"],
            "predicted_tokens_per_s": table.scenario.tokens_per_s(parent.costs["runtime_ms"]),
            "objective": parent.objective,
        },
        "infeasible_fractions": [f for f in fractions if f not in {p["fraction"] for p in points}],
        "points": points,
        "front": front,
        "measured": _measured_children(pipe),
    }
    pipe.run.write_json("search/sweep.json", out)
    _write_text(pipe.run.path("search/pareto.md"), format_markdown(out))
    plot(out, pipe.run.path("search/pareto.png"))
    return out


def _measured_children(pipe: Pipeline) -> list[dict[str, Any]]:
    """Every evaluated child at its measured speed, with its search objective and prediction (empty before
    evaluate)."""
    if not pipe.run.path("evaluate/evaluate.json").exists():
        return []
    results = pipe.run.read_json("evaluate/evaluate.json")
    solutions = pipe.run.read_json("search/solutions.json")
    out = []
    for name, rec in results.items():
        if name == "parent" or name not in solutions:
            continue
        sol = solutions[name]
        out.append(
            {
                "name": name,
                "measured_tokens_per_s": rec["measured_tokens_per_s"],
                "objective": sol["objective"],
                "predicted_tokens_per_s": sol["predicted"]["tokens_per_s"],
            }
        )
    return out


def _write_text(path: Path, text: str) -> None:
    from effinfer_core.atomic import write_atomic

    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, text)


def format_markdown(sweep_out: Mapping[str, Any]) -> str:
    """The front (and the measured children, when evaluated) as Markdown tables."""
    parent_tps = sweep_out["parent"]["predicted_tokens_per_s"]
    lines = [
        f"# Pareto front of the search ({sweep_out['objective']}, "
        f"{'lower' if sweep_out['score_sense'] == 'min' else 'higher'} is better)",
        "",
        f"Parent: predicted {parent_tps:.1f} tokens/s, objective {sweep_out['parent']['objective']:.4f}.",
        "",
        "| fraction | predicted tokens/s | speed-up | objective | solve ms |",
        "|---:|---:|---:|---:|---:|",
    ]
    for i in sweep_out["front"]:
        p = sweep_out["points"][i]
        lines.append(
            f"| {p['fraction']:.2f} | {p['predicted_tokens_per_s']:.1f} | "
            f"{p['predicted_tokens_per_s'] / parent_tps:.3f}x | {p['objective']:.4f} | "
            f"{p['solve_time_s'] * 1000:.1f} |"
        )
    if sweep_out["measured"]:
        lines += [
            "",
            "## Measured children",
            "",
            "| child | measured tokens/s | predicted tokens/s | objective |",
            "|---|---:|---:|---:|",
        ]
        for m in sweep_out["measured"]:
            lines.append(
                f"| {m['name']} | {m['measured_tokens_per_s']:.1f} | {m['predicted_tokens_per_s']:.1f} | "
                f"{m['objective']:.4f} |"
            )
    return "\n".join(lines) + "\n"


def plot(sweep_out: Mapping[str, Any], out: Path) -> None:
    """Swept points faint, the front as a line, measured children at their measured speed, and the parent."""
    import matplotlib

    matplotlib.use("Agg")  # headless
    import matplotlib.pyplot as plt

    pts = sweep_out["points"]
    fig, ax = plt.subplots(figsize=(6.5, 4.5), dpi=120)
    ax.scatter(
        [p["predicted_tokens_per_s"] for p in pts],
        [p["objective"] for p in pts],
        s=14,
        color="C0",
        alpha=0.25,
        label="swept budgets",
    )
    front = [pts[i] for i in sweep_out["front"]]
    ax.plot(
        [p["predicted_tokens_per_s"] for p in front],
        [p["objective"] for p in front],
        "-o",
        color="tab:red",
        lw=1,
        ms=4,
        zorder=4,
        label="Pareto front (predicted)",
    )
    par = sweep_out["parent"]
    ax.scatter(
        [par["predicted_tokens_per_s"]], [par["objective"]], marker="s", s=40, color="k", label="parent"
    )
    ax.annotate("parent", (par["predicted_tokens_per_s"], par["objective"]), xytext=(4, 4), fontsize=7,
                textcoords="offset points")  # fmt: skip
    measured = sweep_out["measured"]
    if measured:
        ax.scatter(
            [m["measured_tokens_per_s"] for m in measured],
            [m["objective"] for m in measured],
            marker="D",
            s=30,
            color="tab:green",
            zorder=5,
            label="children (measured tokens/s)",
        )
        for m in measured:
            ax.annotate(m["name"], (m["measured_tokens_per_s"], m["objective"]), xytext=(4, 4), fontsize=7,
                        textcoords="offset points")  # fmt: skip
    better = "lower" if sweep_out["score_sense"] == "min" else "higher"
    ax.set_xlabel("throughput (tokens/s; swept: predicted) — higher is faster")
    ax.set_ylabel(f"summed replace-1-block {sweep_out['objective']} ({better} is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")  # as benchmarks.report: written whole, then renamed
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(out)


def summary(sweep_out: Mapping[str, Any], run_root: Path) -> str:
    """What `puzzle search --sweep` prints: the three files and the sweep in numbers."""
    times = [p["solve_time_s"] * 1000 for p in sweep_out["points"]]
    n = len(sweep_out["points"])
    total = n + len(sweep_out["infeasible_fractions"])
    lines = [f"{run_root / 'search' / f}" for f in ("sweep.json", "pareto.md", "pareto.png")]
    lines.append(
        f"budgets solved: {n}/{total}, front: {len(sweep_out['front'])} points"
        + (f", solve time median {statistics.median(times):.1f} ms, max {max(times):.1f} ms" if times else "")
    )
    return "\n".join(lines)


def main(pipe: Pipeline, budgets: str) -> None:
    """`puzzle search --sweep --budgets START:STOP:STEP`."""
    out = run_sweep(pipe, parse_budgets(budgets))
    print(summary(out, pipe.run.root))
