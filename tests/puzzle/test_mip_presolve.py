"""The search's presolve is exact: the same optimum as the plain MIP (and as brute force on small problems), with
dominated variants, LP-bound fixing and diverse solutions; the realistic library it is timed on."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from puzzle.mip_presolve import LPBound, dominated, greedy_choice
from puzzle.search import SearchProblem, solve
from puzzle.sweep import sweep
from puzzle.synthetic import REAL_LIBRARY, realistic_problem


def correlated_problem(layers: int, variants: int, seed: int, sense: str = "min") -> SearchProblem:
    """Cheaper variants score worse, with ties and exact twins: what makes real libraries hard."""
    rng = np.random.default_rng(seed)
    runtime = np.sort(rng.uniform(0, 10, (layers, variants)), axis=1)[:, ::-1].copy()
    runtime[:, 1] = runtime[:, 2]  # equal costs ...
    memory = rng.uniform(1, 5, (layers, variants))
    scores = (10 - runtime) * rng.lognormal(0, 0.3, (layers, 1)) + rng.normal(0, 0.5, (layers, variants))
    scores[:, 3] = scores[:, 2]  # ... and equal scores
    scores[:, 4], runtime[:, 4], memory[:, 4] = scores[:, 5], runtime[:, 5], memory[:, 5]  # exact twins
    if sense == "max":
        scores = -scores
    return SearchProblem(
        [[f"v{j}" for j in range(variants)] for _ in range(layers)],
        scores,
        {"runtime_ms": runtime, "memory_mib": memory},
        {"runtime_ms": 2.0, "memory_mib": 1.0},
        sense,
    )


def brute_force(p: SearchProblem, budgets, minimums=None) -> float:
    minimums = minimums or {}
    best = None
    for choice in itertools.product(range(p.num_variants), repeat=p.num_layers):
        if not p.available[np.arange(p.num_layers), choice].all():
            continue
        s = p.solution_for(list(choice))
        if all(s.costs[k] <= b for k, b in budgets.items()) and all(
            s.costs[k] >= m for k, m in minimums.items()
        ):
            if best is None or (s.objective < best if p.score_sense == "min" else s.objective > best):
                best = s.objective
    assert best is not None
    return best


@pytest.mark.parametrize("sense", ["min", "max"])
@pytest.mark.parametrize("seed", range(4))
def test_presolve_equals_plain_mip(seed, sense):
    p = correlated_problem(24, 8, seed, sense)
    for frac in (0.3, 0.5, 0.8):
        lo, hi = p.cost_range("runtime_ms")
        m_lo, m_hi = p.cost_range("memory_mib")
        for budgets in (
            {"runtime_ms": lo + frac * (hi - lo)},
            {"runtime_ms": lo + frac * (hi - lo), "memory_mib": m_lo + 0.6 * (m_hi - m_lo)},
        ):
            fast = solve(p, budgets=budgets)[0]
            plain = solve(p, budgets=budgets, presolve=False)[0]
            assert fast.objective == pytest.approx(plain.objective, rel=1e-12, abs=1e-12)
            assert all(fast.costs[k] <= b for k, b in budgets.items())


@pytest.mark.parametrize("seed", range(3))
def test_presolve_equals_brute_force_with_a_minimum(seed):
    p = correlated_problem(4, 6, seed)
    lo, hi = p.cost_range("runtime_ms")
    budgets, minimums = {"runtime_ms": lo + 0.7 * (hi - lo)}, {"runtime_ms": lo + 0.4 * (hi - lo)}
    got = solve(p, budgets=budgets, minimums=minimums)[0]
    assert got.objective == pytest.approx(brute_force(p, budgets, minimums), rel=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_lp_bounds_are_valid_for_every_solution(seed):
    # The fixing rule: any solution that takes variant j in layer i scores at least bound[i, j] (checked against
    # every solution of small problems), and the bound is not vacuous: it is attained where it matters.
    p = correlated_problem(4, 6, seed)
    budgets = {k: lo + 0.5 * (hi - lo) for k in ("runtime_ms", "memory_mib") for lo, hi in [p.cost_range(k)]}
    keep = p.available & ~dominated(p, list(budgets), [])
    z, bound = LPBound(p, keep, list(budgets)).solve(budgets, {})
    rows = np.arange(p.num_layers)
    best = np.full(bound.shape, np.inf)  # best objective of a feasible solution taking each variant
    for choice in itertools.product(range(p.num_variants), repeat=p.num_layers):
        s = p.solution_for(list(choice))
        if all(s.costs[k] <= b for k, b in budgets.items()):
            best[rows, list(choice)] = np.minimum(best[rows, list(choice)], s.objective)
    reachable = np.isfinite(best)
    assert reachable.sum() > 10 and z <= best.min() + 1e-9
    assert np.all(bound[reachable] <= best[reachable] + 1e-9)  # dominated variants included
    # reduced costs give most variants a bound above z_LP: fixing has something to work with
    assert (bound[reachable] > z + 1e-6).mean() > 0.5


def test_dominance():
    scores = np.array([[0.0, 1.0, 1.0, 2.0, 1.0]])
    runtime = np.array([[5.0, 3.0, 3.0, 4.0, 2.0]])
    memory = np.array([[5.0, 3.0, 3.0, 1.0, 4.0]])
    p = SearchProblem([["a", "b", "b2", "c", "d"]], scores, {"runtime_ms": runtime, "memory_mib": memory})
    # runtime only: b and its twin b2 are beaten by d (same score, cheaper); c by b
    assert dominated(p, ["runtime_ms"], []).tolist() == [[False, True, True, True, False]]
    # runtime and memory: d uses more memory than b, so b stays (b2, its exact twin, goes); c is cheapest in memory
    assert dominated(p, ["runtime_ms", "memory_mib"], []).tolist() == [[False, False, True, False, False]]
    # a minimum on runtime: only variants of equal runtime compete
    assert dominated(p, ["runtime_ms"], ["runtime_ms"]).tolist() == [[False, False, True, False, False]]


def test_greedy_choice_fits_its_budgets():
    p = realistic_problem(80)
    parent = p.solution_for([0] * 80).costs
    keep = p.available & ~dominated(p, ["runtime_ms", "params"], [])
    budgets = {"runtime_ms": 0.5 * parent["runtime_ms"], "params": 0.6 * parent["params"]}
    choice = greedy_choice(p, keep, budgets)
    assert choice is not None
    got = p.solution_for(choice.tolist())
    assert all(got.costs[k] <= b for k, b in budgets.items())
    assert got.objective >= solve(p, budgets=budgets)[0].objective - 1e-12


def test_diverse_solutions_may_need_a_dominated_variant():
    # "b" is dominated by "a" in every layer, yet the second solution must differ in a layer: it takes a "b".
    p = SearchProblem(
        [["a", "b", "c"]] * 3,
        np.array([[0.0, 0.1, 5.0]] * 3),
        {"runtime_ms": np.array([[1.0, 1.5, 0.0]] * 3)},
    )
    fast = solve(p, budgets={"runtime_ms": 10.0}, num_solutions=2, diversity=1)
    plain = solve(p, budgets={"runtime_ms": 10.0}, num_solutions=2, diversity=1, presolve=False)
    assert [s.objective for s in fast] == pytest.approx([s.objective for s in plain]) == [0.0, 0.1]


def test_diverse_solutions_equal_the_plain_mips():
    p = realistic_problem(80)
    budgets = {"runtime_ms": 0.6 * p.solution_for([0] * 80).costs["runtime_ms"]}
    fast = solve(p, budgets=budgets, num_solutions=3, diversity=4)
    plain = solve(p, budgets=budgets, num_solutions=3, diversity=4, presolve=False)
    assert [s.objective for s in fast] == pytest.approx([s.objective for s in plain], rel=1e-12)


def test_sweep_reuses_its_presolve_and_matches_independent_solves():
    p = realistic_problem(80)
    parent = p.solution_for([0] * 80).costs["runtime_ms"]
    ladder = [{"runtime_ms": f * parent} for f in (0.4, 0.5, 0.6, 0.7, 0.9)]
    swept = sweep(p, ladder)
    alone = [solve(p, budgets=b, presolve=False)[0] for b in ladder]
    assert [s.objective for s in swept] == pytest.approx([s.objective for s in alone], rel=1e-12)


def test_realistic_library_is_real_and_correlated():
    assert REAL_LIBRARY.exists()
    p = realistic_problem(80, seed=0)
    assert p.scores.shape == (80, 16) and p.available.all()
    assert np.all(p.scores[:, 0] == 0)  # the parent block: no deviation from the parent
    assert np.all(p.costs["runtime_ms"][:, -1] == 0)  # no_op + no_op costs nothing
    rt = p.costs["runtime_ms"]
    assert all(np.corrcoef(rt[i], p.scores[i])[0, 1] < -0.3 for i in range(80))  # cheaper blocks hurt more
    assert np.array_equal(realistic_problem(80, seed=0).scores, p.scores)
    assert not np.array_equal(realistic_problem(80, seed=1).scores, p.scores)
