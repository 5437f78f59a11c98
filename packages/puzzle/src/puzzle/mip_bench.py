"""The `puzzle.mip_speed` bench task: Puzzle's search on the realistic 80-layer x 16-variant library
(`synthetic.realistic_problem`, tiled from this repo's measured SmolLM2 run), every runtime budget from 0.40 to 0.90
of the parent's in steps of 0.02, solved three ways side by side in one run: with the presolve (`search.solve`'s
default), and as the plain MIP with PuLP + CBC and with HiGHS. The same with memory and parameter budgets added, five
diverse solutions, and the whole sweep with its shared presolve. Every way must reach the same optimum (gap 0).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from benchmarks.claims import Claim, Verdict, pair, record
from benchmarks.registry import TaskContext

FRACTIONS = tuple(round(0.40 + 0.02 * k, 2) for k in range(26))  # of the parent's runtime: 0.40 ... 0.90
FIXED_LIMITS = 0.70  # memory and params budgets of the second scenario, fractions of the parent's
METHODS: dict[str, dict[str, Any]] = {
    "presolve": {},
    "plain-cbc": {"presolve": False, "solver": "cbc"},
    "plain-highs": {"presolve": False, "solver": "highs"},
}
DATA = "realistic-80x16"
LIMIT_MS, DIVERSE_LIMIT_MS = (
    1000.0,
    2000.0,
)  # the targets: each budget under 1 s, five diverse solutions under 2 s


def _budgets(parent: dict[str, float], fraction: float, scenario: str) -> dict[str, float]:
    budgets = {"runtime_ms": fraction * parent["runtime_ms"]}
    if scenario == "runtime+memory+params":
        budgets |= {k: FIXED_LIMITS * parent[k] for k in ("memory_mib", "params")}
    return budgets


def _timed(fn: Callable[[], Any], reps: int) -> tuple[float, Any]:
    """(median seconds over `reps` calls, the last call's result)."""
    times, out = [], None
    for _ in range(reps):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def run_mip_speed(ctx: TaskContext) -> None:
    import pulp

    from puzzle.search import solve
    from puzzle.sweep import sweep
    from puzzle.synthetic import realistic_problem

    problem = realistic_problem(80)
    parent = problem.solution_for([0] * problem.num_layers).costs
    reps = 1 if ctx.profile == "quick" else 3
    methods = {k: v for k, v in METHODS.items() if v.get("solver") != "highs" or pulp.HiGHS().available()}
    for scenario in ("runtime", "runtime+memory+params"):
        objectives: dict[str, list[float]] = {}
        for method, kwargs in methods.items():
            secs, objectives[method] = [], []
            for fraction in FRACTIONS:
                budgets = _budgets(parent, fraction, scenario)
                t, sols = _timed(partial(solve, problem, budgets=budgets, **kwargs), reps)
                secs.append(t)
                objectives[method].append(sols[0].objective)
            gap = max(abs(a - b) for a, b in zip(objectives[method], objectives["presolve"], strict=True))
            worst = int(np.argmax(secs))
            ctx.log(
                f"{scenario} {method}: median {1000 * statistics.median(secs):.0f} ms, max {1000 * secs[worst]:.0f} "
                f"ms (at {FRACTIONS[worst]:.2f}), objectives differ from the presolve's by at most {gap:.1e}"
            )
            ctx.record(
                f"{scenario} {method}",
                DATA,
                {"objective_sum": float(sum(objectives[method]))},
                {
                    "samples_per_s": 1.0 / statistics.median(secs),
                    "latency_p50_ms": 1000 * statistics.median(secs),
                    "latency_max_ms": 1000 * secs[worst],
                    "batch_size": 1,
                },
                scenario=scenario,
                method=method,
                fractions=list(FRACTIONS),
                solve_ms=[1000 * s for s in secs],
                max_objective_gap_to_presolve=gap,
                reps=reps,
            )
    budgets = _budgets(parent, 0.60, "runtime")
    for method, kwargs in methods.items():
        t, sols = _timed(
            partial(solve, problem, budgets=budgets, num_solutions=5, diversity=4, **kwargs), reps
        )
        ctx.record(
            f"5 diverse solutions {method}",
            DATA,
            {"objective_sum": float(sum(s.objective for s in sols))},
            {"samples_per_s": 1.0 / t, "latency_p50_ms": 1000 * t, "batch_size": 1},
            method=method,
            budget_fraction=0.60,
            diversity=4,
            objectives=[s.objective for s in sols],
        )
    ladder = [_budgets(parent, f, "runtime") for f in FRACTIONS]
    t, sols = _timed(partial(sweep, problem, ladder), reps)
    ctx.record(
        "runtime sweep, shared presolve",
        DATA,
        {"objective_sum": float(sum(s.objective for s in sols))},
        {"samples_per_s": len(ladder) / t, "latency_p50_ms": 1000 * t / len(ladder), "batch_size": 1},
        method="sweep",
        budgets=len(ladder),
        whole_sweep_ms=1000 * t,
    )


def judge_mip(records: list[dict[str, Any]]) -> Verdict:
    """Holds when the presolved search is exact (same optimum as plain CBC at every budget) and under 1 s at every
    budget of both scenarios, and five diverse solutions take under 2 s."""
    alone, plain = record(records, "runtime presolve"), record(records, "runtime plain-cbc")
    both = pair(alone, plain, "objective_sum", "samples_per_s")
    if alone is None or plain is None:
        return Verdict("not run at this profile", **both, note="no realistic-library records")
    failures = []
    for scenario in ("runtime", "runtime+memory+params"):
        r = record(records, f"{scenario} presolve")
        base = record(records, f"{scenario} plain-cbc")
        if r is None or base is None:
            failures.append(f"{scenario}: not run")
            continue
        if r["cost"]["latency_max_ms"] >= LIMIT_MS:
            failures.append(f"{scenario}: max {r['cost']['latency_max_ms']:.0f} ms")
        if base["extra"]["max_objective_gap_to_presolve"] > 1e-9:
            failures.append(f"{scenario}: not the plain MIP's optimum")
    diverse = record(records, "5 diverse solutions presolve")
    if diverse is None or diverse["cost"]["latency_p50_ms"] >= DIVERSE_LIMIT_MS:
        failures.append("five diverse solutions: " + ("not run" if diverse is None else "over 2 s"))
    note = (
        f"max {alone['cost']['latency_max_ms']:.0f} ms (plain CBC {plain['cost']['latency_max_ms']:.0f} ms) over "
        f"budgets 0.40-0.90"
    )
    if failures:
        return Verdict("does not hold", **both, note=note + "; " + "; ".join(failures))
    return Verdict("holds", **both, note=note)


MIP_CLAIM = Claim(
    "the search is exact (gap 0) and under 1 s at every runtime budget 0.40-0.90 of the parent's, alone and with "
    "memory and parameter budgets, on a realistic 80x16 library; five diverse solutions under 2 s",
    "plain PuLP + CBC (and HiGHS) on the same problems",
    judge_mip,
)
