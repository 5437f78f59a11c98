"""The input and output of Puzzle's search: `SearchProblem` (scores and measured costs of every (layer, variant)
pair) and `Solution` (one architecture with its totals). The MIP itself is in `puzzle.search`.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np

ScoreSense = Literal["min", "max"]


class InfeasibleTargetError(ValueError):
    """No choice of variants meets the requested budgets/minimums."""


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
