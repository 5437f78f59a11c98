"""Puzzle's MIP solve on an 80-layer x 16-variant library (the published 70B library's size)."""

import pytest

search = pytest.importorskip("puzzle.search", reason="the puzzle package is not installed")
synthetic = pytest.importorskip("puzzle.synthetic", reason="the puzzle package is not installed")


@pytest.mark.parametrize("frac", [0.5, 0.8])
def test_mip_solve_80x16(benchmark, frac):
    problem = synthetic.synthetic_problem(80, 16)
    lo, hi = problem.cost_range("runtime_ms")
    solutions = benchmark(search.solve, problem, budgets={"runtime_ms": lo + frac * (hi - lo)})
    assert solutions[0].optimal
