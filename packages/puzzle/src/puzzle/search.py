"""Puzzle's architecture search: a mixed-integer program over the block library (`SearchProblem`, `solve`).
Budget sweeps and their Pareto front are in `puzzle.sweep`, a synthetic library to exercise the solver in
`puzzle.synthetic`.

Binary x[i, j] = 1 when layer i takes variant j. With s the replace-1-block scores and c_m the measured
per-block costs (fixed = the non-block part: embeddings, LM head, final norm):

    minimise (or maximise)   sum_ij s[i, j] x[i, j]
    subject to               sum_j x[i, j] = 1                                  for every layer i
                             min_m <= fixed_m + sum_ij c_m[i, j] x[i, j] <= budget_m   for every constrained cost m
                             sum_{(i, j) in S} x[i, j] <= L - d                  for every earlier solution S

The last row asks each new solution to differ from every earlier one in at least d layers (Hamming distance).
A throughput target becomes a runtime budget with `runtime_budget_ms`.

Decisions (documented here because P-pipe builds on them):
- A variant is unavailable when its score or any of its costs is NaN; no variable is created for it.
- Budgets and minimums are on the TOTAL, fixed costs included.
- An unreachable target raises `InfeasibleTargetError` naming the cheapest achievable total of each cost.
- Asking for more diverse solutions than exist is not an error: `solve` returns the ones that exist and emits a
  `DiversityShortfallWarning` (the shortfall is also visible as len(result) < num_solutions).
- Every `Solution` carries the budgets it was solved for.
- `Solution.objective` and `Solution.costs` are recomputed from the chosen indices (exact sums), not read back from
  the solver, so they match `SearchProblem.solution_for`. Should rounding a within-tolerance solver answer
  overshoot a bound (by ~1e-6 of a block), that bound is tightened by the overshoot and the MIP re-solved, so
  returned solutions meet every bound exactly.
- Solvers run with zero optimality gap (`mip_gap=0`). Before the solver, `presolve=True` (the default, with
  highspy installed) removes dominated variants and, with an LP bound and a greedy incumbent, every variable that
  cannot be in an optimal solution (`puzzle.mip_presolve`); the answer is the same optimum, found on a much smaller
  MIP. On a realistic 80 x 16 library this is what keeps every budget under a second (the puzzle.mip_speed task
  times both side by side).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import Literal

import numpy as np
import pulp

from puzzle.mip_presolve import LPBound, dominated, greedy_choice, highspy_available, threshold_slack
from puzzle.search_problem import (
    InfeasibleTargetError,
    ScoreSense,
    SearchProblem,
    Solution,
    runtime_budget_ms,
)

__all__ = [
    "DiversityShortfallWarning",
    "InfeasibleTargetError",
    "Presolver",
    "ScoreSense",
    "SearchProblem",
    "Solution",
    "SolverError",
    "SolverName",
    "runtime_budget_ms",
    "solve",
]

SolverName = Literal["auto", "cbc", "highs"]


class DiversityShortfallWarning(UserWarning):
    """Fewer solutions at the requested Hamming distance exist than were asked for."""


class SolverError(RuntimeError):
    """The MIP solver stopped without any feasible solution (e.g. time limit too short)."""


def _solver(name: SolverName, time_limit_s: float, mip_gap: float) -> tuple[pulp.LpSolver, str]:
    # gapAbs=0: both solvers' default absolute gaps (1e-6 in HiGHS) are not small next to KL sums of ~0.1.
    highs = pulp.HiGHS(msg=False, timeLimit=time_limit_s, gapRel=mip_gap, gapAbs=0.0)
    if name == "highs" and not highs.available():
        raise ValueError(
            "solver='highs' needs the highspy package: pip install highspy (or use solver='cbc')"
        )
    if name == "highs":
        return highs, "highs"
    if name not in ("auto", "cbc"):
        raise ValueError(f"solver must be 'auto', 'cbc' or 'highs', got {name!r}")
    # "auto" is CBC: on the 80x16 library it solved about 2x faster than HiGHS (the puzzle.mip_speed bench task).
    # CBC's automatic cutoff increment prunes nodes that improve by less than it: measured 1.5e-5 suboptimal here.
    kwargs = dict(msg=False, timeLimit=time_limit_s, gapRel=mip_gap, gapAbs=0.0, options=["increment 1e-10"])
    cbc = pulp.COIN_CMD(**kwargs)  # a cbc on PATH (pulp[cbc])
    if not cbc.available():
        with warnings.catch_warnings():  # PuLP 3.3 deprecates its bundled binary; it is still the one we have
            warnings.simplefilter("ignore", DeprecationWarning)
            cbc = pulp.PULP_CBC_CMD(**kwargs)
    return cbc, "cbc"


def _infeasible_message(
    problem: SearchProblem, budgets: Mapping[str, float], minimums: Mapping[str, float], why: str
) -> str:
    lines = [f"no architecture meets the target ({why}):"]
    for name in sorted(set(budgets) | set(minimums)):
        lo, hi = problem.cost_range(name)
        parts = [f"  {name}: cheapest achievable total {lo:.6g} (most expensive {hi:.6g})"]
        if name in budgets:
            flag = "  <- budget below the cheapest" if budgets[name] < lo else ""
            parts.append(f"budget {budgets[name]:.6g}{flag}")
        if name in minimums:
            flag = "  <- minimum above the dearest" if minimums[name] > hi else ""
            parts.append(f"minimum {minimums[name]:.6g}{flag}")
        lines.append(", ".join(parts))
    lines.append(
        "raise the budget (lower the throughput target / minimum), or extend the search space with cheaper "
        "variants (fewer KV heads, smaller FFN, linear or no-op subblocks)"
    )
    return "\n".join(lines)


def _check_targets(
    problem: SearchProblem, budgets: Mapping[str, float], minimums: Mapping[str, float]
) -> None:
    unknown = (set(budgets) | set(minimums)) - set(problem.costs)
    if unknown:
        raise ValueError(
            f"budget names {sorted(unknown)} are not costs of the problem {sorted(problem.costs)}"
        )
    for name in set(budgets) | set(minimums):
        lo, hi = problem.cost_range(name)
        b = budgets.get(name, math.inf)
        m = minimums.get(name, -math.inf)
        if b < lo or m > hi or m > b:
            raise InfeasibleTargetError(
                _infeasible_message(problem, budgets, minimums, f"{name} out of reach")
            )


def _binary(prob: pulp.LpProblem, name: str) -> pulp.LpVariable:
    if hasattr(prob, "add_variable"):  # PuLP >= 3.3 owns variables by the model
        return prob.add_variable(name, cat=pulp.LpBinary)
    return pulp.LpVariable(name, cat=pulp.LpBinary)


class Presolver:
    """The budget-independent part of the presolve for one problem and one set of bounded costs: the dominated
    variants and the LP model (`puzzle.mip_presolve`). `sweep` keeps one across budgets; `solve` makes its own."""

    def __init__(
        self, problem: SearchProblem, budget_costs: Sequence[str], minimum_costs: Sequence[str] = ()
    ):
        self.problem = problem
        self.key = (tuple(sorted(budget_costs)), tuple(sorted(minimum_costs)))
        self.keep = problem.available & ~dominated(problem, budget_costs, minimum_costs)
        self.lp = LPBound(problem, self.keep, sorted(set(budget_costs) | set(minimum_costs)))

    def matches(
        self, problem: SearchProblem, budgets: Mapping[str, float], minimums: Mapping[str, float]
    ) -> bool:
        return problem is self.problem and self.key == (tuple(sorted(budgets)), tuple(sorted(minimums)))


def solve(
    problem: SearchProblem,
    *,
    budgets: Mapping[str, float],
    minimums: Mapping[str, float] | None = None,
    num_solutions: int = 1,
    diversity: int = 1,
    solver: SolverName = "auto",
    time_limit_s: float = 60.0,
    mip_gap: float = 0.0,
    presolve: bool = True,
    presolver: Presolver | None = None,
    incumbent: Sequence[int] | None = None,
) -> list[Solution]:
    """Solve the Puzzle MIP (see module docstring) and return up to `num_solutions` solutions, best first.

    budgets / minimums bound the TOTAL of each named cost (fixed costs included). Every further solution differs
    from all earlier ones in at least `diversity` layers. solver: "auto" = CBC (or HiGHS, which "highs" selects
    when highspy is installed). time_limit_s applies to each solve. presolve: reduce the MIP first (exact; needs
    highspy, else the plain MIP is solved); `presolver` reuses that work across calls on one problem, `incumbent`
    (a feasible choice, e.g. the previous budget's in an ascending sweep) tightens it. Raises InfeasibleTargetError
    when not even one solution exists.
    """
    minimums = dict(minimums or {})
    budgets = dict(budgets)
    if num_solutions < 1:
        raise ValueError(f"num_solutions must be >= 1, got {num_solutions}")
    if not 1 <= diversity <= problem.num_layers:
        raise ValueError(
            f"diversity must be in [1, {problem.num_layers}] (number of layers that must differ), got {diversity}"
        )
    _check_targets(problem, budgets, minimums)
    mip = dict(solver=solver, time_limit_s=time_limit_s, mip_gap=mip_gap, diversity=diversity)
    bounded = set(budgets) | set(minimums)
    if not (presolve and bounded and mip_gap == 0.0 and highspy_available()):
        return _solve_plain(problem, budgets, minimums, num_solutions, **mip)
    start = time.perf_counter()
    if presolver is None or not presolver.matches(problem, budgets, minimums):
        presolver = Presolver(problem, list(budgets), list(minimums))
    bound = presolver.lp.solve(budgets, minimums)
    if bound is None:  # the LP relaxation is infeasible, so is the MIP: the plain path words the error
        return _solve_plain(problem, budgets, minimums, num_solutions, **mip)
    z_lp, lower = bound
    sign = 1.0 if problem.score_sense == "min" else -1.0  # the presolve works on lower-is-better scores
    best = math.inf
    for choice in (incumbent, None if minimums else greedy_choice(problem, presolver.keep, budgets)):
        if choice is not None and _fits(problem, choice, budgets, minimums):
            best = min(best, sign * problem.solution_for(list(choice)).objective)
    solutions: list[Solution] = []
    while len(solutions) < num_solutions:
        # U: an upper bound on this solution's (lower-is-better) objective; widened until the reduced MIP proves it
        step = max(best - z_lp, threshold_slack(z_lp)) if math.isfinite(best) else math.inf
        upper = best if not solutions else sign * solutions[-1].objective + step
        while True:
            # dominance is exact for the best solution only: a later one may need a dominated variant to differ
            base = presolver.keep if not solutions else problem.available
            keep = base & (lower <= upper + threshold_slack(upper))
            sol = _solve_reduced(problem, keep, budgets, minimums, solutions, mip)
            if math.isinf(upper) or (
                sol is not None and sign * sol.objective <= upper + threshold_slack(upper)
            ):
                break
            step *= 4
            upper = upper + step if step < 1e3 * (abs(z_lp) + 1) else math.inf
        if sol is None:
            if not solutions:  # U = inf: nothing was left out, so the full MIP is infeasible
                raise InfeasibleTargetError(
                    _infeasible_message(
                        problem, budgets, minimums, "each bound is reachable alone, not together"
                    )
                )
            _warn_shortfall(len(solutions), num_solutions, diversity)
            break
        solutions.append(sol)
    elapsed = time.perf_counter() - start  # the presolve's share is in the first solution's time
    solutions[0].solve_time_s = elapsed - sum(s.solve_time_s for s in solutions[1:])
    return solutions


def _fits(
    problem: SearchProblem,
    choice: Sequence[int] | np.ndarray,
    budgets: Mapping[str, float],
    minimums: Mapping[str, float],
) -> bool:
    rows = np.arange(problem.num_layers)
    c = np.asarray(choice)
    if not problem.available[rows, c].all():
        return False
    total = {
        k: problem.costs[k][rows, c].sum() + problem.fixed_costs[k] for k in set(budgets) | set(minimums)
    }
    return all(total[k] <= b for k, b in budgets.items()) and all(total[k] >= m for k, m in minimums.items())


def _solve_reduced(
    problem: SearchProblem,
    keep: np.ndarray,
    budgets: Mapping[str, float],
    minimums: Mapping[str, float],
    earlier: Sequence[Solution],
    mip: Mapping,
) -> Solution | None:
    """The MIP over the `keep` variants (the others NaN), differing from `earlier`; None when it has no solution."""
    if not keep.any(axis=1).all():
        return None
    reduced = SearchProblem(
        problem.variant_names,
        np.where(keep, problem.scores, np.nan),
        problem.costs,
        problem.fixed_costs,
        problem.score_sense,
    )
    try:
        _check_targets(reduced, budgets, minimums)
        return _solve_one(reduced, budgets, minimums, [s.choice for s in earlier], **mip)
    except InfeasibleTargetError:
        return None


def _solve_plain(
    problem: SearchProblem,
    budgets: Mapping[str, float],
    minimums: Mapping[str, float],
    num_solutions: int,
    **mip,
) -> list[Solution]:
    """The MIP as stated, one solution after another, each differing from the earlier ones."""
    solutions: list[Solution] = []
    while len(solutions) < num_solutions:
        try:
            sol = _solve_one(problem, budgets, minimums, [s.choice for s in solutions], **mip)
        except InfeasibleTargetError:
            if not solutions:
                raise
            sol = None
        if sol is None:
            _warn_shortfall(len(solutions), num_solutions, mip["diversity"])
            break
        solutions.append(sol)
    return solutions


def _warn_shortfall(found: int, wanted: int, diversity: int) -> None:
    warnings.warn(
        f"only {found} of {wanted} solutions differ pairwise in >= {diversity} layers within the budgets; "
        "returning those",
        DiversityShortfallWarning,
        stacklevel=3,
    )


def _solve_one(
    problem: SearchProblem,
    budgets: Mapping[str, float],
    minimums: Mapping[str, float],
    earlier: Sequence[Sequence[int]],
    *,
    solver: SolverName,
    time_limit_s: float,
    mip_gap: float,
    diversity: int,
) -> Solution | None:
    """One MIP solve: the best solution sharing at most L - diversity (layer, variant) pairs with each of `earlier`.
    Raises InfeasibleTargetError when there is none and `earlier` is empty; None when there is none otherwise."""
    L = problem.num_layers
    lp_solver, solver_name = _solver(solver, time_limit_s, mip_gap)
    # One binary per available (layer, variant), row-major, so each layer's variables are contiguous.
    avail = problem.available
    var_at = np.full(avail.shape, -1, dtype=np.int64)
    var_at[avail] = np.arange(int(avail.sum()))
    layer_vars = np.split(np.arange(int(avail.sum())), np.cumsum(avail.sum(axis=1))[:-1])
    objective = problem.scores[avail].tolist()
    # Cost rows divided by their largest coefficient: solver tolerances (~1e-6) then act relative to a block.
    constrained = sorted(set(budgets) | set(minimums))
    coefs, scales = {}, {}
    for name in constrained:
        c = problem.costs[name][avail]
        scales[name] = float(np.abs(c).max()) or 1.0
        coefs[name] = (c / scales[name]).tolist()
    # repair margin after a tolerance-sized overshoot (original units)
    tighten = dict.fromkeys(constrained, 0.0)
    rows = np.arange(L)
    # an earlier solution that uses a variant left out here shares fewer pairs: its cut only counts those present
    cuts = [
        [int(var_at[i, j]) for i, j in zip(rows, choice, strict=True) if var_at[i, j] >= 0]
        for choice in earlier
    ]
    sense = pulp.LpMinimize if problem.score_sense == "min" else pulp.LpMaximize

    def build() -> tuple[pulp.LpProblem, list[pulp.LpVariable]]:
        prob = pulp.LpProblem("puzzle", sense)
        x = [_binary(prob, f"x_{i}_{j}") for i, j in np.argwhere(avail).tolist()]
        prob += pulp.LpAffineExpression(zip(x, objective, strict=True))
        for i, ks in enumerate(layer_vars):
            prob += pulp.LpConstraint(
                pulp.LpAffineExpression((x[k], 1.0) for k in ks), pulp.LpConstraintEQ, f"one_{i}", 1.0
            )
        for name in constrained:
            fixed, scale = problem.fixed_costs[name], scales[name]
            expr = pulp.LpAffineExpression(zip(x, coefs[name], strict=True))
            if name in budgets:
                rhs = (budgets[name] - fixed - tighten[name]) / scale
                prob += pulp.LpConstraint(expr, pulp.LpConstraintLE, f"budget_{name}", rhs)
            if name in minimums:
                rhs = (minimums[name] - fixed + tighten[name]) / scale
                prob += pulp.LpConstraint(expr, pulp.LpConstraintGE, f"minimum_{name}", rhs)
        # Diversity: the next solution shares at most L - d of each earlier one's (layer, variant) pairs.
        for n, cut in enumerate(cuts):
            if len(cut) > L - diversity:
                prob += pulp.LpConstraint(
                    pulp.LpAffineExpression((x[k], 1.0) for k in cut),
                    pulp.LpConstraintLE,
                    f"diverse_{n}",
                    float(L - diversity),
                )
        return prob, x

    for _repair in range(6):
        prob, x = build()
        t0 = time.perf_counter()
        prob.solve(lp_solver)
        elapsed = time.perf_counter() - t0
        if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
            if not earlier:
                raise InfeasibleTargetError(
                    _infeasible_message(
                        problem, budgets, minimums, "each bound is reachable alone, not together"
                    )
                )
            return None
        if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            raise SolverError(
                f"{solver_name} found no feasible solution within time_limit_s={time_limit_s} "
                f"(status {pulp.LpStatus[prob.status]}); raise the time limit"
            )
        values = np.array([v.varValue or 0.0 for v in x])
        choice = np.where(avail, values[np.maximum(var_at, 0)], -np.inf).argmax(axis=1)
        sol = problem.solution_for(
            choice.tolist(),
            budgets=dict(budgets),
            minimums=dict(minimums),
            optimal=prob.sol_status == pulp.LpSolutionOptimal,
            solver=solver_name,
            solve_time_s=elapsed,
        )
        # Rounding a within-tolerance solution can overshoot a bound by ~1e-6 of a block: tighten and re-solve. A
        # bound that equals a child's total is met, whatever order float addition took (misses of 1e-15 ms are not).
        miss = {k: sol.costs[k] - b for k, b in budgets.items() if sol.costs[k] > b + 1e-12 * abs(b)}
        miss |= {k: m - sol.costs[k] for k, m in minimums.items() if sol.costs[k] < m - 1e-12 * abs(m)}
        if not miss:
            return sol
        for k, v in miss.items():
            tighten[k] += 2 * v + 1e-12 * scales[k]
    raise SolverError(f"{solver_name} keeps returning solutions outside the bounds by {miss}")
