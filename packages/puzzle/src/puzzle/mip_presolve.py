"""What the structure of Puzzle's MIP allows before a solver sees it: the search is a multiple-choice knapsack (one
variant per layer, a few summed costs under budgets), whose LP relaxation is nearly integral. `search.solve` uses
three exact reductions from here, and `sweep` reuses them across budgets:

1. Dominance (depends on which costs are bounded, not on the budgets): variant j of a layer goes when another
   variant k of that layer is at least as good in score and in every budgeted cost (equal in a cost with a
   minimum), and strictly better in one of them (exact twins: the lower index stays). Any solution using j stays
   feasible and gets no worse with k instead, so an optimum without j exists.
2. A feasible incumbent from a greedy heuristic: the best-scoring variant per layer, then the swaps that buy the most
   budget per unit of score until every budget holds, then improving swaps while they fit. Its objective U bounds
   the optimum from above.
3. Reduced-cost fixing: from the LP relaxation's optimum z_LP and its duals, any solution taking x_ij = 1 scores
   at least a bound b_ij (`LPBound.solve`). Variables with b_ij > U cannot be in a solution scoring U or better
   and are left out. The MIP over what is left has the same optimum whenever that optimum is <= U (the
   caller checks, and widens U otherwise), so the answer stays exact (gap 0).

The LP is solved with highspy, one model per problem whose budget rows change bounds between budgets (HiGHS then
re-optimises from the last basis). Scores are turned to "lower is better" here; the caller maps back.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from puzzle.search_problem import SearchProblem


def dominated(
    problem: SearchProblem, budget_costs: Sequence[str], minimum_costs: Sequence[str]
) -> np.ndarray:
    """[L, V] bool: available variants that another variant of the same layer dominates (module docstring, 1)."""
    avail = problem.available
    s = np.where(avail, _lower_is_better(problem), np.inf)
    # [L, k, j]: k is at least as good as j everywhere that matters / strictly better somewhere
    geq = s[:, :, None] <= s[:, None, :]
    strict = s[:, :, None] < s[:, None, :]
    for name in budget_costs:
        c = np.where(avail, problem.costs[name], np.inf)
        if (
            name in minimum_costs
        ):  # a minimum can make the dearer variant the needed one: only equal ones compete
            geq &= c[:, :, None] == c[:, None, :]
        else:
            geq &= c[:, :, None] <= c[:, None, :]
            strict |= c[:, :, None] < c[:, None, :]
    for name in set(minimum_costs) - set(budget_costs):
        c = np.where(avail, problem.costs[name], np.inf)
        geq &= c[:, :, None] == c[:, None, :]
    v = problem.num_variants
    lower_index = np.arange(v)[:, None] < np.arange(v)[None, :]  # [k, j]: k < j, for exact twins
    beats = geq & (strict | lower_index[None]) & avail[:, :, None]
    beats &= ~np.eye(v, dtype=bool)[None]
    return avail & beats.any(axis=1)


def _lower_is_better(problem: SearchProblem) -> np.ndarray:
    return problem.scores if problem.score_sense == "min" else -problem.scores


def greedy_choice(
    problem: SearchProblem, keep: np.ndarray, budgets: Mapping[str, float]
) -> np.ndarray | None:
    """A feasible choice (variant index per layer) within `budgets` from the `keep` variants, or None (2. above)."""
    s = np.where(keep, _lower_is_better(problem), np.inf)
    names = list(budgets)
    costs = np.stack([np.where(keep, problem.costs[n], 0.0) for n in names])  # [M, L, V], finite everywhere
    room = np.array([budgets[n] - problem.fixed_costs[n] for n in names])  # what the blocks may spend
    scale = np.maximum(np.abs(room), 1e-300)
    rows = np.arange(problem.num_layers)
    choice = s.argmin(axis=1)

    def excess(spent: np.ndarray) -> np.ndarray:  # summed budget-scaled overshoot, over the first axis
        return (
            np.maximum(spent - room.reshape((-1,) + (1,) * (spent.ndim - 1)), 0.0)
            / scale.reshape((-1,) + (1,) * (spent.ndim - 1))
        ).sum(axis=0)

    while True:  # repair: the swap with the least score increase per unit of overshoot removed (strictly less
        now = costs[:, rows, choice]  # overshoot each time, so this ends)
        spent = now.sum(axis=1)
        if not (spent > room).any():
            break
        saving = excess(spent) - excess(spent[:, None, None] + costs - now[:, :, None])  # [L, V]
        useful = keep & (saving > 1e-12)  # in budget units; below it is float round-off, not a saving
        if not useful.any():
            return None
        worse = np.maximum(s - s[rows, choice][:, None], 0.0)
        ratio = np.where(useful, worse / np.where(useful, saving, 1.0), np.inf)
        i, j = np.unravel_index(np.argmin(ratio), ratio.shape)
        choice[i] = j
    while True:  # improve: the best single swap that still fits, until none helps
        now = costs[:, rows, choice]
        delta = costs - now[:, :, None]  # [M, L, V]
        fits = keep & (now.sum(axis=1)[:, None, None] + delta <= room[:, None, None]).all(axis=0)
        gain = np.where(fits, s[rows, choice][:, None] - s, 0.0)
        i, j = np.unravel_index(np.argmax(gain), gain.shape)
        if not gain[i, j] > 0:
            return choice
        choice[i] = j


class LPBound:
    """The LP relaxation over the `keep` variants, one highspy model re-solved for each set of budgets."""

    def __init__(self, problem: SearchProblem, keep: np.ndarray, bounded: Sequence[str]):
        import highspy

        self.problem, self.bounded = problem, list(bounded)
        self.cols = np.argwhere(keep)  # (layer, variant) of each column, row-major
        n, layers = len(self.cols), problem.num_layers
        lower_is_better = _lower_is_better(problem)
        # column k: a 1 in its layer's row, then its (scaled) cost in each bounded row
        self.scale = {m: float(np.abs(problem.costs[m][keep]).max()) or 1.0 for m in self.bounded}
        lp = highspy.HighsLp()
        lp.num_col_, lp.num_row_ = n, layers + len(self.bounded)
        lp.col_cost_ = lower_is_better[keep].astype(np.float64)
        lp.col_lower_, lp.col_upper_ = np.zeros(n), np.ones(n)
        lp.row_lower_ = np.concatenate([np.ones(layers), np.full(len(self.bounded), -highspy.kHighsInf)])
        lp.row_upper_ = np.concatenate([np.ones(layers), np.full(len(self.bounded), highspy.kHighsInf)])
        per_col = 1 + len(self.bounded)
        index = np.empty((n, per_col), dtype=np.int32)
        value = np.empty((n, per_col))
        index[:, 0], value[:, 0] = self.cols[:, 0], 1.0
        for r, m in enumerate(self.bounded):
            index[:, 1 + r] = layers + r
            value[:, 1 + r] = problem.costs[m][keep] / self.scale[m]
        lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
        lp.a_matrix_.start_ = np.arange(0, n * per_col + 1, per_col, dtype=np.int32)
        lp.a_matrix_.index_, lp.a_matrix_.value_ = index.ravel(), value.ravel()
        self.highs = highspy.Highs()
        self.highs.setOptionValue("output_flag", False)
        self.highs.passModel(lp)
        self._highspy = highspy

    def solve(
        self, budgets: Mapping[str, float], minimums: Mapping[str, float]
    ) -> tuple[float, np.ndarray] | None:
        """(z_LP, [L, V] lower bound on the objective of any solution that takes each variant; inf where
        unavailable) for these bounds; None when the LP is infeasible.

        With y the LP's row duals and d = c - A^T y, any feasible x scores at least z_LP + sum_l (d[l, chosen_l] -
        D_l), where D_l = sum_k d[l, k] x*[l, k] (nonzero only for a variant at its upper bound). Every term is >= 0,
        for the variants left out by dominance too (each is no better in reduced cost than a kept one that
        dominates it), so taking variant j in layer i costs at least z_LP + d[i, j] - D_i: the bound returned."""
        inf = self._highspy.kHighsInf
        layers = self.problem.num_layers
        for r, m in enumerate(self.bounded):
            fixed, scale = self.problem.fixed_costs[m], self.scale[m]
            lo = (minimums[m] - fixed) / scale if m in minimums else -inf
            hi = (budgets[m] - fixed) / scale if m in budgets else inf
            self.highs.changeRowBounds(layers + r, lo, hi)
        self.highs.run()
        if self.highs.getModelStatus() != self._highspy.HighsModelStatus.kOptimal:
            return None
        solution = self.highs.getSolution()
        y = np.asarray(solution.row_dual)
        avail = self.problem.available
        reduced = (
            np.where(avail, _lower_is_better(self.problem), 0.0) - y[:layers, None]
        )  # finite; masked below
        for r, m in enumerate(self.bounded):
            reduced = reduced - y[layers + r] * np.where(avail, self.problem.costs[m], 0.0) / self.scale[m]
        x = np.zeros(reduced.shape)
        x[self.cols[:, 0], self.cols[:, 1]] = np.asarray(solution.col_value)
        per_layer = (reduced * x).sum(axis=1)
        z = float(self.highs.getInfo().objective_function_value)
        return z, np.where(avail, z + reduced - per_layer[:, None], np.inf)


def highspy_available() -> bool:
    try:
        import highspy  # noqa: F401
    except ImportError:
        return False
    return True


def threshold_slack(value: float) -> float:
    """Slack on `z_LP + d > U` for LP round-off: fixing fewer variables is always safe."""
    return 1e-7 * (1.0 + abs(value)) if math.isfinite(value) else 0.0
