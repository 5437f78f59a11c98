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
- Solvers run with zero optimality gap (`mip_gap=0`): on an 80 x 16 library CBC takes ~0.1-0.3 s and HiGHS
  ~0.3-0.7 s here (the puzzle.mip_speed bench task), so exactness costs little.
"""

from __future__ import annotations

import fnmatch
import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pulp

ScoreSense = Literal["min", "max"]
SolverName = Literal["auto", "cbc", "highs"]


class InfeasibleTargetError(ValueError):
    """No choice of variants meets the requested budgets/minimums."""


class DiversityShortfallWarning(UserWarning):
    """Fewer solutions at the requested Hamming distance exist than were asked for."""


class SolverError(RuntimeError):
    """The MIP solver stopped without any feasible solution (e.g. time limit too short)."""


@dataclass
class SearchProblem:
    """Scores and costs of every (layer, variant) pair, the input of the search.

    variant_names: per layer, the V variant ids (column j of every array is variant_names[i][j]).
    scores: [L, V] replace-1-block score; np.nan marks an unavailable variant.
    costs: name -> [L, V] per-block cost (e.g. "runtime_ms", "memory_mib", "params"); np.nan = unavailable.
    fixed_costs: name -> non-block cost added to every solution's total.
    score_sense: "min" for KL/loss-like scores, "max" for accuracy-like ones.
    """

    variant_names: list[list[str]]
    scores: np.ndarray
    costs: dict[str, np.ndarray]
    fixed_costs: dict[str, float] = field(default_factory=dict)
    score_sense: ScoreSense = "min"

    def __post_init__(self) -> None:
        self.scores = np.asarray(self.scores, dtype=np.float64)
        if self.scores.ndim != 2:
            raise ValueError(f"scores must be a [layers, variants] array, got shape {self.scores.shape}")
        shape = self.scores.shape
        if len(self.variant_names) != shape[0] or any(len(n) != shape[1] for n in self.variant_names):
            raise ValueError(
                f"variant_names must hold {shape[1]} names for each of the {shape[0]} layers "
                f"(one per scores column); pad missing variants with a name and a NaN score"
            )
        self.costs = {k: np.asarray(v, dtype=np.float64) for k, v in self.costs.items()}
        for name, arr in self.costs.items():
            if arr.shape != shape:
                raise ValueError(f"cost {name!r} has shape {arr.shape}, expected {shape} like scores")
        unknown = set(self.fixed_costs) - set(self.costs)
        if unknown:
            raise ValueError(f"fixed_costs names {sorted(unknown)} are not among costs {sorted(self.costs)}")
        self.fixed_costs = {k: float(self.fixed_costs.get(k, 0.0)) for k in self.costs}
        if self.score_sense not in ("min", "max"):
            raise ValueError(f"score_sense must be 'min' or 'max', got {self.score_sense!r}")
        empty = np.flatnonzero(~self.available.any(axis=1))
        if empty.size:
            raise ValueError(
                f"layers {empty.tolist()} have no available variant (all scores/costs NaN); "
                "score at least the parent block of every layer"
            )

    @property
    def num_layers(self) -> int:
        return self.scores.shape[0]

    @property
    def num_variants(self) -> int:
        return self.scores.shape[1]

    @property
    def available(self) -> np.ndarray:
        """[L, V] bool: score and every cost are finite."""
        ok = np.isfinite(self.scores)
        for arr in self.costs.values():
            ok &= np.isfinite(arr)
        return ok

    def cost_range(self, name: str) -> tuple[float, float]:
        """(cheapest, dearest) achievable total of one cost: fixed + sum_i min_j / max_j c[i, j]."""
        arr = self.costs[name]
        avail = self.available
        lo = np.where(avail, arr, np.inf).min(axis=1).sum()
        hi = np.where(avail, arr, -np.inf).max(axis=1).sum()
        fixed = self.fixed_costs[name]
        return float(lo + fixed), float(hi + fixed)

    def without(self, patterns: Sequence[str]) -> SearchProblem:
        """A copy in which the variants whose name matches one of the glob `patterns` are unavailable (for example
        "linear+*": linear attention with any FFN). Raises ValueError when a pattern matches no variant or a layer is
        left with none."""
        excluded = np.zeros(self.scores.shape, dtype=bool)
        for pattern in patterns:
            hit = np.array([[fnmatch.fnmatchcase(n, pattern) for n in row] for row in self.variant_names])
            if not (hit & self.available).any():
                names = {
                    n
                    for row, ok in zip(self.variant_names, self.available, strict=True)
                    for n, a in zip(row, ok, strict=True)
                    if a
                }
                raise ValueError(
                    f"exclusion pattern {pattern!r} matches none of the available variants "
                    f"({', '.join(sorted(names))})"
                )
            excluded |= hit
        return SearchProblem(
            self.variant_names,
            np.where(excluded, np.nan, self.scores),
            self.costs,
            self.fixed_costs,
            self.score_sense,
        )

    def solution_for(self, choice: Sequence[int], **extra: Any) -> Solution:
        """Evaluate a choice (variant index per layer): objective = sum_i s[i, c_i], totals incl. fixed costs."""
        c = np.asarray(choice, dtype=np.int64)
        if c.shape != (self.num_layers,) or c.min() < 0 or c.max() >= self.num_variants:
            raise ValueError(f"choice must hold one variant index in [0, {self.num_variants}) per layer")
        rows = np.arange(self.num_layers)
        if not self.available[rows, c].all():
            bad = rows[~self.available[rows, c]].tolist()
            raise ValueError(f"choice uses unavailable (NaN) variants in layers {bad}")
        costs = {k: float(v[rows, c].sum() + self.fixed_costs[k]) for k, v in self.costs.items()}
        return Solution(
            choice=c.tolist(),
            objective=float(self.scores[rows, c].sum()),
            costs=costs,
            names=[self.variant_names[i][j] for i, j in zip(rows, c, strict=True)],
            **extra,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN -> None)."""

        def enc(a: np.ndarray) -> list[list[float | None]]:
            return [[None if math.isnan(v) else v for v in row] for row in a.tolist()]

        return {
            "variant_names": self.variant_names,
            "scores": enc(self.scores),
            "costs": {k: enc(v) for k, v in self.costs.items()},
            "fixed_costs": self.fixed_costs,
            "score_sense": self.score_sense,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchProblem:
        def dec(rows: list[list[float | None]]) -> np.ndarray:
            return np.array([[np.nan if v is None else v for v in row] for row in rows], dtype=np.float64)

        return cls(
            variant_names=[list(n) for n in d["variant_names"]],
            scores=dec(d["scores"]),
            costs={k: dec(v) for k, v in d["costs"].items()},
            fixed_costs=dict(d.get("fixed_costs", {})),
            score_sense=d.get("score_sense", "min"),
        )


@dataclass
class Solution:
    """One architecture: variant index per layer, its total score and its total costs (fixed included)."""

    choice: list[int]
    objective: float
    costs: dict[str, float]
    names: list[str] = field(default_factory=list)
    budgets: dict[str, float] = field(default_factory=dict)
    minimums: dict[str, float] = field(default_factory=dict)
    optimal: bool = True  # False when the solver stopped on its time limit with a feasible, unproven solution
    solver: str = ""
    solve_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Solution:
        return cls(**d)


def runtime_budget_ms(target_tokens_per_s: float, batch: int, gen_len: int) -> float:
    """Runtime budget for a throughput target: batch * gen_len tokens in 1000 * batch * gen_len / target ms."""
    if target_tokens_per_s <= 0 or batch <= 0 or gen_len <= 0:
        raise ValueError(
            f"target_tokens_per_s, batch and gen_len must be positive, got {target_tokens_per_s}, {batch}, {gen_len}"
        )
    return 1000.0 * batch * gen_len / target_tokens_per_s


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
) -> list[Solution]:
    """Solve the Puzzle MIP (see module docstring) and return up to `num_solutions` solutions, best first.

    budgets / minimums bound the TOTAL of each named cost (fixed costs included). Every further solution differs
    from all earlier ones in at least `diversity` layers. solver: "auto" = CBC (faster here than HiGHS,
    which "highs" selects when highspy is installed). time_limit_s applies to each solve. Raises InfeasibleTargetError when not even one solution exists.
    """
    minimums = dict(minimums or {})
    budgets = dict(budgets)
    L = problem.num_layers
    if num_solutions < 1:
        raise ValueError(f"num_solutions must be >= 1, got {num_solutions}")
    if not 1 <= diversity <= L:
        raise ValueError(
            f"diversity must be in [1, {L}] (number of layers that must differ), got {diversity}"
        )
    _check_targets(problem, budgets, minimums)
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
    cuts: list[list[int]] = []
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
            if name in budgets:
                rhs = (budgets[name] - fixed - tighten[name]) / scale
                prob += pulp.LpConstraint(
                    pulp.LpAffineExpression(zip(x, coefs[name], strict=True)),
                    pulp.LpConstraintLE,
                    f"budget_{name}",
                    rhs,
                )
            if name in minimums:
                rhs = (minimums[name] - fixed + tighten[name]) / scale
                prob += pulp.LpConstraint(
                    pulp.LpAffineExpression(zip(x, coefs[name], strict=True)),
                    pulp.LpConstraintGE,
                    f"minimum_{name}",
                    rhs,
                )
        # Diversity: the next solution shares at most L - d of each earlier one's (layer, variant) pairs.
        for n, cut in enumerate(cuts):
            prob += pulp.LpConstraint(
                pulp.LpAffineExpression((x[k], 1.0) for k in cut),
                pulp.LpConstraintLE,
                f"diverse_{n}",
                float(L - diversity),
            )
        return prob, x

    rows = np.arange(L)
    solutions: list[Solution] = []
    repairs = 0
    while len(solutions) < num_solutions:
        prob, x = build()
        t0 = time.perf_counter()
        prob.solve(lp_solver)
        elapsed = time.perf_counter() - t0
        if prob.status == pulp.LpStatusInfeasible or prob.sol_status == pulp.LpSolutionInfeasible:
            if not solutions:
                raise InfeasibleTargetError(
                    _infeasible_message(
                        problem, budgets, minimums, "each bound is reachable alone, not together"
                    )
                )
            warnings.warn(
                f"only {len(solutions)} of {num_solutions} solutions differ pairwise in >= {diversity} layers "
                "within the budgets; returning those",
                DiversityShortfallWarning,
                stacklevel=2,
            )
            break
        if prob.sol_status not in (pulp.LpSolutionOptimal, pulp.LpSolutionIntegerFeasible):
            raise SolverError(
                f"{solver_name} found no feasible solution within time_limit_s={time_limit_s} "
                f"(status {pulp.LpStatus[prob.status]}); raise the time limit"
            )
        values = np.array([v.varValue or 0.0 for v in x])
        choice = np.where(avail, values[np.maximum(var_at, 0)], -np.inf).argmax(axis=1)
        sol = problem.solution_for(
            choice.tolist(),
            budgets=budgets,
            minimums=minimums,
            optimal=prob.sol_status == pulp.LpSolutionOptimal,
            solver=solver_name,
            solve_time_s=elapsed,
        )
        # Rounding a within-tolerance solution can overshoot a bound by ~1e-6 of a block: tighten and re-solve. A
        # bound that equals a child's total is met, whatever order float addition took (misses of 1e-15 ms are not).
        miss = {k: sol.costs[k] - b for k, b in budgets.items() if sol.costs[k] > b + 1e-12 * abs(b)}
        miss |= {k: m - sol.costs[k] for k, m in minimums.items() if sol.costs[k] < m - 1e-12 * abs(m)}
        if miss:
            repairs += 1
            if repairs > 5:
                raise SolverError(f"{solver_name} keeps returning solutions outside the bounds by {miss}")
            for k, v in miss.items():
                tighten[k] += 2 * v + 1e-12 * scales[k]
            continue
        solutions.append(sol)
        cuts.append(var_at[rows, choice].tolist())
    return solutions
