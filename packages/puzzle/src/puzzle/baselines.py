"""Homogeneous baselines a user would try instead of Puzzle's search (choice selection only; `realize` builds them).

- Uniform width shrink (Minitron-style): the same block variant (same FFN size, same KV heads) in every layer.
- ShortGPT layer dropping (Men et al., 2024): block influence BI_i = 1 - E_tokens[cos(x_i, x_{i+1})], drop the
  layers with the lowest BI (whole block -> no_op/no_op) until the budgets hold.

Both return a `search.Solution`, so their measured cost and score compare one to one with the MIP's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch

from puzzle.search import InfeasibleTargetError, SearchProblem, Solution


def _meets(sol: Solution, budgets: Mapping[str, float], minimums: Mapping[str, float]) -> bool:
    return all(sol.costs[k] <= v for k, v in budgets.items()) and all(
        sol.costs[k] >= v for k, v in minimums.items()
    )


def _check_names(problem: SearchProblem, names: Sequence[str]) -> None:
    unknown = set(names) - set(problem.costs)
    if unknown:
        raise ValueError(
            f"budget names {sorted(unknown)} are not costs of the problem {sorted(problem.costs)}"
        )


def homogeneous_choices(
    problem: SearchProblem, allowed_variants: Sequence[str] | None = None
) -> dict[str, list[int]]:
    """Variant name -> choice that uses that variant in every layer (only names available in all layers)."""
    avail = problem.available
    out: dict[str, list[int]] = {}
    for name in problem.variant_names[0]:
        if allowed_variants is not None and name not in allowed_variants:
            continue
        cols = [row.index(name) if name in row else -1 for row in problem.variant_names]
        if all(c >= 0 and avail[i, c] for i, c in enumerate(cols)):
            out[name] = cols
    return out


def uniform_choice(
    problem: SearchProblem,
    budgets: Mapping[str, float],
    *,
    minimums: Mapping[str, float] | None = None,
    allowed_variants: Sequence[str] | None = None,
) -> Solution:
    """Uniform shrink: best-scoring homogeneous configuration whose totals meet the budgets.

    The homogeneous grid is coarse, so the result usually sits below the budget: compare with the MIP at the
    returned `Solution.costs`, not at the budget. Pass `allowed_variants` (e.g. only GQA x FFN-width variants) to
    keep linear / no-op blocks out of a Minitron-style baseline. Ties on score go to the cheaper configuration.
    """
    minimums = dict(minimums or {})
    _check_names(problem, [*budgets, *minimums])
    candidates = homogeneous_choices(problem, allowed_variants)
    if not candidates:
        raise ValueError("no variant is available in every layer, so no homogeneous configuration exists")
    sols = [
        problem.solution_for(c, budgets=dict(budgets), minimums=minimums, solver="uniform")
        for c in candidates.values()
    ]
    feasible = [s for s in sols if _meets(s, budgets, minimums)]
    if not feasible:
        lines = ["no homogeneous configuration meets the target:"]
        for k in sorted(set(budgets) | set(minimums)):
            lo = min(s.costs[k] for s in sols)
            hi = max(s.costs[k] for s in sols)
            lines.append(
                f"  {k}: homogeneous totals span {lo:.6g}..{hi:.6g}, budget {budgets.get(k, '-')}, "
                f"minimum {minimums.get(k, '-')}"
            )
        lines.append("raise the budget or allow cheaper variants (allowed_variants / search space)")
        raise InfeasibleTargetError("\n".join(lines))
    first = next(iter(budgets), None)
    sign = 1.0 if problem.score_sense == "min" else -1.0
    return min(feasible, key=lambda s: (sign * s.objective, s.costs[first] if first else 0.0))


@torch.no_grad()
def block_influence(
    hidden_states: Sequence[torch.Tensor], attention_mask: torch.Tensor | None = None
) -> np.ndarray:
    """ShortGPT block influence per layer: BI_i = 1 - mean_{b,t} cos(h_i[b, t], h_{i+1}[b, t]).

    hidden_states: L+1 tensors [B, T, H] (HF `output_hidden_states`: embeddings, then each layer's output).
    attention_mask: optional [B, T], 0 for padding tokens to leave out of the mean. Note HF applies the final norm
    to the last entry; pass the pre-norm output of the last layer instead if that layer's BI matters to you.
    To combine batches, average the per-batch results weighted by their token counts.
    """
    if len(hidden_states) < 2:
        raise ValueError(
            f"need L+1 >= 2 hidden states (input of layer 0 .. output of layer L-1), got {len(hidden_states)}"
        )
    hs = torch.stack([h.to(torch.float64) for h in hidden_states])  # [L+1, B, T, H]
    if hs.ndim != 4:
        raise ValueError(
            f"hidden states must be [B, T, H] tensors, got shape {tuple(hidden_states[0].shape)}"
        )
    cos = torch.nn.functional.cosine_similarity(hs[:-1], hs[1:], dim=-1)  # [L, B, T]
    if attention_mask is None:
        mean = cos.mean(dim=(1, 2))
    else:
        m = attention_mask.to(torch.float64).to(cos.device)
        if m.shape != cos.shape[1:]:
            raise ValueError(
                f"attention_mask shape {tuple(m.shape)} does not match hidden states [B, T] "
                f"{tuple(cos.shape[1:])}"
            )
        mean = (cos * m).sum(dim=(1, 2)) / m.sum().clamp_min(1.0)
    return (1.0 - mean).cpu().numpy()


def _variant_index(problem: SearchProblem, layer: int, variant: str | int) -> int:
    if isinstance(variant, int):
        return variant
    try:
        return problem.variant_names[layer].index(variant)
    except ValueError:
        raise ValueError(
            f"variant {variant!r} is not in layer {layer}'s variants {problem.variant_names[layer]}"
        ) from None


def _drop_index(problem: SearchProblem, layer: int, drop_variant: str | int | None) -> int:
    """Column of the drop variant in this layer, -1 when the layer has none."""
    if drop_variant is not None:
        return _variant_index(problem, layer, drop_variant)
    # The no_op/no_op block costs nothing in every metric; find it by that rather than by a naming convention.
    zero = np.ones(problem.num_variants, dtype=bool)
    for arr in problem.costs.values():
        zero &= arr[layer] == 0
    hits = np.flatnonzero(zero)
    return int(hits[0]) if hits.size else -1


def shortgpt_choice(
    problem: SearchProblem,
    bi: Sequence[float] | np.ndarray,
    budgets: Mapping[str, float],
    parent_variant: str | int = 0,
    drop_variant: str | int | None = None,
) -> Solution:
    """ShortGPT: start from the parent block everywhere, drop layers in ascending BI until every budget holds.

    Dropping sets the whole block to `drop_variant` (default: the variant whose costs are all 0, i.e.
    no_op/no_op). Layers where that variant is unavailable are never dropped. Raises InfeasibleTargetError when
    dropping every droppable layer still misses a budget.
    """
    bi = np.asarray(bi, dtype=np.float64)
    L = problem.num_layers
    if bi.shape != (L,):
        raise ValueError(f"bi must hold one block influence per layer ({L}), got shape {bi.shape}")
    _check_names(problem, list(budgets))
    avail = problem.available
    choice = [_variant_index(problem, i, parent_variant) for i in range(L)]
    if not all(avail[i, c] for i, c in enumerate(choice)):
        raise ValueError(f"parent variant {parent_variant!r} is unavailable (NaN) in some layer")
    drop = [_drop_index(problem, i, drop_variant) for i in range(L)]
    if all(d < 0 for d in drop):
        raise ValueError("no layer has a zero-cost (no_op/no_op) variant; pass drop_variant explicitly")
    order = [int(i) for i in np.argsort(bi, kind="stable") if drop[i] >= 0 and avail[i, drop[i]]]

    def evaluate() -> Solution:
        return problem.solution_for(choice, budgets=dict(budgets), solver="shortgpt")

    sol = evaluate()
    for layer in order:
        if _meets(sol, budgets, {}):
            return sol
        choice[layer] = drop[layer]
        sol = evaluate()
    if _meets(sol, budgets, {}):
        return sol
    reached = ", ".join(f"{k}={sol.costs[k]:.6g} (budget {v:.6g})" for k, v in budgets.items())
    raise InfeasibleTargetError(
        f"dropping all {len(order)} droppable layers still misses the budgets: {reached}; raise the budget"
    )
