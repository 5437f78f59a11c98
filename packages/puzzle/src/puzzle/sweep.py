"""Budget sweeps of the search and their Pareto front: one best child per budget, then the non-dominated ones.

`sweep` skips (with a warning) budgets that are infeasible unless on_infeasible="raise"; every `Solution` carries
the budgets it was solved for, so the skipped ones are visible.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np

from puzzle.search import (
    InfeasibleTargetError,
    Presolver,
    ScoreSense,
    SearchProblem,
    Solution,
    SolverName,
    solve,
)


def sweep(
    problem: SearchProblem,
    budgets_list: Sequence[Mapping[str, float]],
    *,
    minimums: Mapping[str, float] | None = None,
    solver: SolverName = "auto",
    time_limit_s: float = 60.0,
    on_infeasible: Literal["skip", "raise"] = "skip",
) -> list[Solution]:
    """Best solution for each budget dict, in the given order; infeasible budgets are skipped with a warning.

    The budgets share one presolve (dominated variants, the LP model re-solved from its last basis) when they bound
    the same costs, and each budget's search starts from the previous budget's child when that one still fits (so
    ascending budgets, as a Pareto sweep takes them, hand each search a good incumbent)."""
    out: list[Solution] = []
    presolver: Presolver | None = None
    for budgets in budgets_list:
        if presolver is None or not presolver.matches(problem, budgets, minimums or {}):
            presolver = Presolver(problem, list(budgets), list(minimums or {}))
        try:
            out.extend(
                solve(
                    problem,
                    budgets=budgets,
                    minimums=minimums,
                    solver=solver,
                    time_limit_s=time_limit_s,
                    presolver=presolver,
                    incumbent=out[-1].choice if out else None,
                )
            )
        except InfeasibleTargetError as e:
            if on_infeasible == "raise":
                raise
            warnings.warn(f"sweep: skipping budgets {dict(budgets)}: {e}", stacklevel=2)
    return out


def pareto_front(
    points: Sequence[Sequence[float]] | np.ndarray, *, score_sense: ScoreSense = "min"
) -> list[int]:
    """Indices of the non-dominated (cost, score) points, sorted by cost.

    Lower cost is better; the score is better when lower (score_sense="min") or higher ("max"). q dominates p when
    cost_q <= cost_p and score_q is at least as good, with one of them strictly better. Exact duplicates do not
    dominate each other, so all copies stay. Points with a NaN are ignored.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    cost = pts[:, 0]
    score = pts[:, 1] if score_sense == "min" else -pts[:, 1]
    ok = np.isfinite(cost) & np.isfinite(score)
    # dominated[p] = any q: c_q <= c_p & s_q <= s_p & (c_q < c_p | s_q < s_p); O(N^2) is fine for sweeps.
    le = (cost[None, :] <= cost[:, None]) & (score[None, :] <= score[:, None])
    lt = (cost[None, :] < cost[:, None]) | (score[None, :] < score[:, None])
    dominated = (le & lt & ok[None, :]).any(axis=1)
    keep = np.flatnonzero(ok & ~dominated)
    return keep[np.lexsort((score[keep], cost[keep]))].tolist()
