import itertools
import json
import warnings

import numpy as np
import pulp
import pytest

from puzzle.search import (
    DiversityShortfallWarning,
    InfeasibleTargetError,
    SearchProblem,
    Solution,
    runtime_budget_ms,
    solve,
)
from puzzle.sweep import pareto_front, sweep
from puzzle.synthetic import synthetic_problem

SOLVERS = ["cbc"] + (["highs"] if pulp.HiGHS().available() else [])


def random_problem(layers: int, variants: int, seed: int, sense: str = "min", nan_frac: float = 0.15):
    rng = np.random.default_rng(seed)
    scores = rng.random((layers, variants))
    scores[rng.random((layers, variants)) < nan_frac] = np.nan
    scores[:, 0] = rng.random(layers)  # keep one variant per layer available
    costs = {
        "runtime_ms": rng.uniform(1, 10, (layers, variants)),
        "memory_mib": rng.uniform(1, 10, (layers, variants)),
    }
    return SearchProblem(
        variant_names=[[f"v{j}" for j in range(variants)] for _ in range(layers)],
        scores=scores,
        costs=costs,
        fixed_costs={"runtime_ms": 1.5, "memory_mib": 3.0},
        score_sense=sense,
    )


def brute_force(problem: SearchProblem, budgets: dict, minimums: dict | None = None) -> float | None:
    """Best objective by enumerating every choice; None when nothing is feasible."""
    minimums = minimums or {}
    L, V = problem.scores.shape
    choices = np.array(list(itertools.product(range(V), repeat=L)))  # [N, L]
    rows = np.arange(L)
    ok = problem.available[rows, choices].all(axis=1)
    for k, arr in problem.costs.items():
        total = arr[rows, choices].sum(axis=1) + problem.fixed_costs[k]
        if k in budgets:
            ok &= total <= budgets[k]
        if k in minimums:
            ok &= total >= minimums[k]
    if not ok.any():
        return None
    obj = np.nan_to_num(problem.scores[rows, choices]).sum(axis=1)[ok]
    return float(obj.min() if problem.score_sense == "min" else obj.max())


def totals(problem: SearchProblem, choice: list[int]) -> dict[str, float]:
    return {
        k: sum(a[i, c] for i, c in enumerate(choice)) + problem.fixed_costs[k]
        for k, a in problem.costs.items()
    }


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("sense", ["min", "max"])
def test_matches_brute_force(solver, sense):
    for seed in range(4):
        p = random_problem(4, 3, seed, sense)
        lo, hi = p.cost_range("runtime_ms")
        mlo, mhi = p.cost_range("memory_mib")
        for frac in (0.2, 0.5, 0.9):
            budgets = {"runtime_ms": lo + frac * (hi - lo), "memory_mib": mlo + 0.7 * (mhi - mlo)}
            expected = brute_force(p, budgets)
            if expected is None:
                with pytest.raises(InfeasibleTargetError):
                    solve(p, budgets=budgets, solver=solver)
                continue
            (sol,) = solve(p, budgets=budgets, solver=solver)
            assert sol.objective == pytest.approx(expected, abs=1e-9)
            assert sol.solver == solver and sol.optimal


@pytest.mark.parametrize("solver", SOLVERS)
def test_minimum_matches_brute_force(solver):
    p = random_problem(4, 3, 11)
    lo, hi = p.cost_range("runtime_ms")
    budgets, minimums = {"runtime_ms": lo + 0.8 * (hi - lo)}, {"runtime_ms": lo + 0.6 * (hi - lo)}
    (sol,) = solve(p, budgets=budgets, minimums=minimums, solver=solver)
    assert sol.objective == pytest.approx(brute_force(p, budgets, minimums), abs=1e-9)
    assert minimums["runtime_ms"] <= sol.costs["runtime_ms"] <= budgets["runtime_ms"]


def test_every_constraint_honoured():
    for seed in range(3):
        p = synthetic_problem(20, 10, seed)
        ranges = {k: p.cost_range(k) for k in p.costs}
        for frac in (0.25, 0.5, 0.8):
            budgets = {k: lo + frac * (hi - lo) for k, (lo, hi) in ranges.items()}
            minimums = {
                "params": ranges["params"][0] + 0.5 * frac * (ranges["params"][1] - ranges["params"][0])
            }
            for sol in solve(p, budgets=budgets, minimums=minimums, num_solutions=2, diversity=2):
                assert len(sol.choice) == p.num_layers
                assert all(p.available[i, c] for i, c in enumerate(sol.choice))
                recomputed = totals(p, sol.choice)
                for k, b in budgets.items():
                    assert recomputed[k] <= b * (1 + 1e-9)
                    assert sol.costs[k] == pytest.approx(recomputed[k])
                assert recomputed["params"] >= minimums["params"] * (1 - 1e-9)
                assert sol.names == [p.variant_names[i][c] for i, c in enumerate(sol.choice)]


def test_fixed_costs_count_against_the_budget():
    p = SearchProblem(
        [["big", "small"]] * 2,
        np.array([[0.0, 1.0], [0.0, 1.0]]),
        {"runtime_ms": np.array([[2.0, 1.0], [2.0, 1.0]])},
        fixed_costs={"runtime_ms": 1.0},
    )
    assert solve(p, budgets={"runtime_ms": 5.0})[0].choice == [0, 0]
    (sol,) = solve(p, budgets={"runtime_ms": 4.0})  # 2 + 2 + fixed 1 = 5 > 4: one layer must shrink
    assert sorted(sol.choice) == [0, 1] and sol.costs["runtime_ms"] == pytest.approx(4.0)


def test_a_budget_equal_to_a_childs_total_in_another_float_order_is_met():
    # 0.1 + 0.2 + 0.7 = 1.0000000000000002 in the solution's order, 0.9999999999999999 as (0.7 + 0.2) + 0.1: the
    # best child within the budget misses it by 3e-16 ms, which must not be taken for a bound the solver broke
    runtime = np.array([[0.1, 5.0, 0.01], [0.2, 5.0, 0.01], [0.7, 5.0, 0.01]])
    p = SearchProblem(
        [["small", "big", "tiny"]] * 3,
        np.array([[1.0, 0.0, 9.0]] * 3),
        {"runtime_ms": runtime},
        fixed_costs={"runtime_ms": 0.0},
    )
    budget = (0.7 + 0.2) + 0.1
    (sol,) = solve(p, budgets={"runtime_ms": budget})
    assert sol.choice == [0, 0, 0] and sol.costs["runtime_ms"] > budget


@pytest.mark.parametrize("solver", SOLVERS)
def test_diversity(solver):
    p = random_problem(6, 4, 3, nan_frac=0.0)
    lo, hi = p.cost_range("runtime_ms")
    budgets = {"runtime_ms": lo + 0.6 * (hi - lo)}
    sols = solve(p, budgets=budgets, num_solutions=5, diversity=3, solver=solver)
    assert len(sols) == 5
    for a, b in itertools.combinations(sols, 2):
        assert sum(x != y for x, y in zip(a.choice, b.choice, strict=True)) >= 3
    assert sols[0].objective == pytest.approx(brute_force(p, budgets), abs=1e-9)
    objectives = [s.objective for s in sols]
    assert objectives == sorted(objectives)  # each later solve has one more constraint


def test_diversity_shortfall_returns_what_exists():
    p = SearchProblem([["a", "b"]] * 2, np.array([[0.0, 1.0], [0.0, 2.0]]), {"c": np.ones((2, 2))})
    with pytest.warns(DiversityShortfallWarning, match="only 4 of 10"):
        sols = solve(p, budgets={"c": 10.0}, num_solutions=10, diversity=1)
    assert sorted(tuple(s.choice) for s in sols) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    with pytest.warns(DiversityShortfallWarning):
        sols = solve(p, budgets={"c": 10.0}, num_solutions=3, diversity=2)
    assert len(sols) == 2 and all(x != y for x, y in zip(sols[0].choice, sols[1].choice, strict=True))


def test_nan_variants_never_chosen():
    for seed in range(5):
        p = random_problem(8, 5, seed, nan_frac=0.3)
        # Make the NaN-scored variants irresistible if they were ever considered: free.
        p.costs["runtime_ms"][np.isnan(p.scores)] = 0.0
        lo, hi = p.cost_range("runtime_ms")
        for sol in solve(p, budgets={"runtime_ms": lo + 0.3 * (hi - lo)}, num_solutions=3, diversity=1):
            assert not np.isnan(p.scores[np.arange(8), sol.choice]).any()
    # A NaN cost also marks a variant unavailable, even with the best score.
    p = SearchProblem([["a", "b"]], np.array([[1.0, 0.0]]), {"c": np.array([[1.0, np.nan]])})
    assert solve(p, budgets={"c": 5.0})[0].choice == [0]


def test_excluded_variants_are_never_chosen():
    names = [["kv3+ffn", "linear+ffn", "linear+no_op", "no_op+no_op"]] * 3
    scores = np.array([[1.0, 0.1, 0.2, 0.9]] * 3)  # the linear-attention blocks score best and cost least
    runtime = np.array([[4.0, 1.0, 0.5, 0.0]] * 3)
    p = SearchProblem(names, scores, {"runtime_ms": runtime})
    assert all(n.startswith("linear+") for n in solve(p, budgets={"runtime_ms": 6.0})[0].names)
    q = p.without(["linear+*"])
    for sol in solve(q, budgets={"runtime_ms": 6.0}, num_solutions=3):
        assert not any(n.startswith("linear+") for n in sol.names)
    assert np.isfinite(p.scores).all()  # the original problem is left as it was
    with pytest.raises(ValueError, match="'gqa\\*' matches none"):
        p.without(["gqa*"])
    with pytest.raises(ValueError, match="no available variant"):
        p.without(["*+*"])


def test_infeasible_budget_names_cheapest_total():
    p = random_problem(5, 3, 0)
    lo, _ = p.cost_range("runtime_ms")
    with pytest.raises(InfeasibleTargetError) as err:
        solve(p, budgets={"runtime_ms": lo * 0.9, "memory_mib": 1e9})
    msg = str(err.value)
    assert f"cheapest achievable total {lo:.6g}" in msg and "raise the budget" in msg
    assert "budget below the cheapest" in msg
    _, hi = p.cost_range("memory_mib")
    with pytest.raises(InfeasibleTargetError, match="minimum above the dearest"):
        solve(p, budgets={}, minimums={"memory_mib": hi + 1})


def test_jointly_infeasible_budgets_raise():
    # Each budget alone is reachable (pick a or pick b) but not both at once.
    p = SearchProblem(
        [["a", "b"]], np.array([[0.0, 0.0]]), {"r": np.array([[1.0, 5.0]]), "m": np.array([[5.0, 1.0]])}
    )
    with pytest.raises(InfeasibleTargetError, match="not together"):
        solve(p, budgets={"r": 2.0, "m": 2.0})


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="no available variant"):
        SearchProblem([["a"]], np.array([[np.nan]]), {"c": np.ones((1, 1))})
    with pytest.raises(ValueError, match="shape"):
        SearchProblem([["a", "b"]], np.zeros((1, 2)), {"c": np.ones((2, 2))})
    p = random_problem(3, 2, 0)
    with pytest.raises(ValueError, match="not costs of the problem"):
        solve(p, budgets={"latency": 1.0})
    with pytest.raises(ValueError, match="diversity"):
        solve(p, budgets={"runtime_ms": 100.0}, diversity=4)


def test_solver_choice_falls_back_to_cbc(monkeypatch):
    monkeypatch.setattr(pulp.HiGHS, "available", lambda self: False)
    p = random_problem(3, 2, 0)
    assert solve(p, budgets={"runtime_ms": 100.0}, solver="auto")[0].solver == "cbc"
    with pytest.raises(ValueError, match="highspy"):
        solve(p, budgets={"runtime_ms": 100.0}, solver="highs")


def test_runtime_budget_ms():
    # 4 sequences x 500 new tokens at 2000 tok/s take 1 s.
    assert runtime_budget_ms(2000.0, 4, 500) == pytest.approx(1000.0)
    assert runtime_budget_ms(6472.0, 256, 1024) == pytest.approx(1000 * 256 * 1024 / 6472)
    with pytest.raises(ValueError):
        runtime_budget_ms(0.0, 1, 1)


def test_sweep_is_monotone_and_skips_infeasible():
    p = synthetic_problem(16, 8, 1)
    lo, hi = p.cost_range("runtime_ms")
    budgets = [{"runtime_ms": lo * 0.5}] + [
        {"runtime_ms": lo + f * (hi - lo)} for f in np.linspace(0.05, 1, 6)
    ]
    with pytest.warns(UserWarning, match="skipping"):
        sols = sweep(p, budgets)
    assert [s.budgets for s in sols] == budgets[1:]
    objectives = [s.objective for s in sols]
    assert all(b <= a + 1e-12 for a, b in zip(objectives, objectives[1:], strict=False))
    assert objectives[-1] == pytest.approx(0.0)  # whole budget: the parent, score 0
    with pytest.raises(InfeasibleTargetError):
        sweep(p, budgets[:1], on_infeasible="raise")


def test_pareto_front():
    pts = [(1, 5), (2, 3), (2, 4), (3, 3), (4, 1), (5, 1), (0.5, 10), (np.nan, 0)]
    assert pareto_front(pts) == [6, 0, 1, 4]
    # Higher score better: (3, 9) and (1, 6) survive; (2, 6) is dominated by (1, 6), (4, 8) by (3, 9).
    assert pareto_front([(3, 9), (1, 6), (2, 6), (4, 8)], score_sense="max") == [1, 0]
    assert pareto_front([(1, 1), (1, 1)]) == [0, 1]
    assert pareto_front(np.empty((0, 2))) == []


def test_serialisation_round_trip():
    p = synthetic_problem(6, 5, 0, nan_fraction=0.3)
    p2 = SearchProblem.from_dict(json.loads(json.dumps(p.to_dict())))
    np.testing.assert_array_equal(p2.scores, p.scores)
    assert p2.fixed_costs == p.fixed_costs and p2.variant_names == p.variant_names
    (sol,) = solve(p, budgets={"runtime_ms": p.cost_range("runtime_ms")[1] * 0.7})
    assert Solution.from_dict(json.loads(json.dumps(sol.to_dict()))) == sol


def test_synthetic_problem_is_realistic():
    p = synthetic_problem(80, 16, 0)
    assert p.scores.shape == (80, 16) and np.isnan(p.scores).any()
    assert np.all(p.scores[:, 0] == 0)  # parent block: no deviation from the parent
    assert all(np.all(a[:, -1] == 0) for a in p.costs.values())  # no_op/no_op is free
    # Cheaper blocks hurt more: score and runtime are anti-correlated within every layer.
    rt = p.costs["runtime_ms"]
    for i in range(80):
        ok = ~np.isnan(p.scores[i])
        assert np.corrcoef(rt[i, ok], p.scores[i, ok])[0, 1] < -0.3
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        (sol,) = solve(p, budgets={"runtime_ms": 0.5 * p.cost_range("runtime_ms")[1]})
    assert sol.optimal and sol.costs["runtime_ms"] <= 0.5 * p.cost_range("runtime_ms")[1]


@pytest.mark.skipif(len(SOLVERS) < 2, reason="highspy not installed")
def test_cbc_and_highs_agree_on_a_large_library():
    # Guards the exactness settings (gap 0, CBC cutoff increment): both must reach the same optimum.
    for seed in range(2):
        p = synthetic_problem(80, 16, seed)
        lo, hi = p.cost_range("runtime_ms")
        budgets = {"runtime_ms": lo + 0.5 * (hi - lo)}
        cbc, highs = (solve(p, budgets=budgets, solver=s)[0] for s in SOLVERS)
        assert cbc.objective == pytest.approx(highs.objective, rel=1e-12, abs=1e-12)
