"""How fast is Puzzle's MIP on a library the size of the published 70B one (80 layers x 16 variants)?

Prints, per solver and scenario, the median wall time of `solve` (model build + solver) and of the solver alone,
over a few runs and seeds. Usage: python packages/puzzle/scripts/mip_speed.py [--layers 80 --variants 16 --runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pulp

from puzzle.search import SearchProblem, solve, synthetic_problem


def budgets_at(problem: SearchProblem, names: list[str], frac: float) -> dict[str, float]:
    """Budget = cheapest + frac * (dearest - cheapest) for each named cost."""
    out = {}
    for name in names:
        lo, hi = problem.cost_range(name)
        out[name] = lo + frac * (hi - lo)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=80)
    ap.add_argument("--variants", type=int, default=16)
    ap.add_argument("--runs", type=int, default=5, help="seeds (one solve each) per solver and scenario")
    args = ap.parse_args()

    scenarios = {
        "runtime budget (throughput target)": (["runtime_ms"], 1),
        "runtime + memory + params budgets": (["runtime_ms", "memory_mib", "params"], 1),
        "runtime budget, 5 solutions, diversity 4": (["runtime_ms"], 5),
    }
    solvers = ["cbc"] + (["highs"] if pulp.HiGHS().available() else [])
    probe = synthetic_problem(args.layers, args.variants, 0)
    n_vars = int(probe.available.sum())
    print(
        f"library: {args.layers} layers x {args.variants} variants -> {n_vars} binaries (NaN variants get none)"
    )
    for label, (names, k) in scenarios.items():
        # Rows: one choice row per layer + one per budget, + one diversity cut per earlier solution.
        rows = args.layers + len(names)
        print(f"\n{label}: {rows} constraints (+{k - 1} diversity cuts by the last solve)")
        for solver in solvers:
            wall, inner, objs = [], [], []
            for seed in range(args.runs):
                p = synthetic_problem(args.layers, args.variants, seed)
                t0 = time.perf_counter()
                sols = solve(
                    p, budgets=budgets_at(p, names, 0.5), num_solutions=k, diversity=4, solver=solver
                )
                wall.append(time.perf_counter() - t0)
                inner.append(sum(s.solve_time_s for s in sols))
                objs.append(sols[0].objective)
            print(
                f"  {solver:5s}  solve() median {statistics.median(wall) * 1000:7.1f} ms "
                f"(max {max(wall) * 1000:7.1f}), solver alone median {statistics.median(inner) * 1000:7.1f} ms, "
                f"objective seed0 {objs[0]:.6f}"
            )


if __name__ == "__main__":
    main()
