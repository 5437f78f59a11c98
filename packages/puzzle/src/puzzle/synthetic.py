"""Block libraries to exercise and time the search without a model (tests, the `puzzle.mip_speed` bench task, the
micro-benchmarks): `realistic_problem`, tiled from a real measured library, and `synthetic_problem`, independent
random numbers shaped like the published 70B library.

Real libraries are much harder for a MIP than independent random numbers: a cheaper block scores worse, so many
mixes of blocks land within a hair of each other at a given budget. `realistic_problem` keeps that correlation.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from puzzle.search import SearchProblem

# search/problem.json of this repo's SmolLM2-135M run (30 layers x 16 blocks: attention {kv3, kv1, linear, no_op}
# x FFN {1536, 768, 384, no_op}; replace-1-block KL after BLD, costs measured on the 2-core CPU). How it was made:
# docs/results.md, "The realistic MIP library".
REAL_LIBRARY = Path(__file__).with_name("libraries") / "smollm2-135m-16.json"


def realistic_problem(layers: int = 80, seed: int = 0, library: Path = REAL_LIBRARY) -> SearchProblem:
    """A real measured library stretched to `layers` layers: layer i takes the blocks of real layer
    round(i * (L_real - 1) / (layers - 1)), so the sensitive first and last layers stay at the ends; each layer's
    scores are scaled by its own factor (lognormal, sigma 0.3) and each block's by a little more (sigma 0.1), and
    measured runtimes get a 3% per-block spread, as between the layers of one real library. Params and memory are
    structural and stay as they are. Deterministic in `seed`."""
    real = SearchProblem.from_dict(json.loads(library.read_text()))
    if layers < 2:
        raise ValueError(f"layers must be >= 2, got {layers}")
    rng = np.random.default_rng(seed)
    source = np.rint(np.arange(layers) * (real.num_layers - 1) / (layers - 1)).astype(int)
    shape = (layers, real.num_variants)
    scores = real.scores[source] * rng.lognormal(0.0, 0.3, (layers, 1)) * rng.lognormal(0.0, 0.1, shape)
    costs = {k: v[source].copy() for k, v in real.costs.items()}
    costs["runtime_ms"] *= 1 + 0.03 * rng.standard_normal(shape)
    return SearchProblem(
        variant_names=[real.variant_names[i] for i in source],
        scores=scores,
        costs=costs,
        fixed_costs=real.fixed_costs,
        score_sense=real.score_sense,
    )


# Synthetic library shaped like the published 70B one: 6 attention x 9 FFN subblock kinds, KL-like scores.
_ATTN = [
    ("gqa_kv8", 1.0),
    ("gqa_kv4", 0.5),
    ("gqa_kv2", 0.25),
    ("gqa_kv1", 0.125),
    ("linear", -1.0),
    ("no_op", 0.0),
]
_FFN = [
    ("ffn_100", 1.0),
    ("ffn_75", 0.75),
    ("ffn_62", 0.62),
    ("ffn_50", 0.5),
    ("ffn_25", 0.25),
    ("ffn_20", 0.2),
    ("ffn_10", 0.1),
    ("linear", -1.0),
    ("no_op", 0.0),
]


def synthetic_problem(
    layers: int = 80, variants: int = 16, seed: int = 0, *, nan_fraction: float = 0.02
) -> SearchProblem:
    """A realistic random block library: variant 0 is the parent block (score 0), one variant is no_op/no_op
    (all costs 0), the rest are random (attention, FFN) pairs; KL scores grow as blocks get cheaper, scaled by a
    per-layer sensitivity (first and last layers most sensitive); a few non-parent, non-no-op entries are NaN.
    Costs: "runtime_ms" (decode, KV-read dominated), "params", "memory_mib" (bf16 weights + KV cache)."""
    pairs = [(a, f) for a in range(len(_ATTN)) for f in range(len(_FFN))]
    if not 2 <= variants <= len(pairs):
        raise ValueError(f"variants must be in [2, {len(pairs)}], got {variants}")
    rng = np.random.default_rng(seed)
    parent, drop = 0, len(pairs) - 1
    rest = rng.choice(np.arange(1, drop), size=variants - 2, replace=False)
    chosen = [pairs[k] for k in [parent, *sorted(rest.tolist()), drop]]
    names = [f"{_ATTN[a][0]}+{_FFN[f][0]}" for a, f in chosen]
    kv = np.array([_ATTN[a][1] for a, _ in chosen])
    ff = np.array([_FFN[f][1] for _, f in chosen])

    hidden = 8192.0
    # params per block: attention q+o (2 H^2) + k+v (H^2/4 at 8 KV heads); FFN 3 * H * 3.5H * fraction.
    attn_params = np.where(kv > 0, 2.0 + 0.25 * kv, np.where(kv < 0, 1.0, 0.0)) * hidden**2
    ffn_params = np.where(ff > 0, 10.5 * ff, np.where(ff < 0, 1.0, 0.0)) * hidden**2
    params = attn_params + ffn_params
    # batch 256, seq 1200, bf16
    kv_cache_mib = np.where(kv > 0, kv * 256 * 1200 * 2 * 8 * 128 * 2 / 2**20, 0.0)
    runtime = 0.002 * params / hidden**2 + 0.05 * np.maximum(kv, 0.0)

    attn_loss = np.where(kv > 0, 0.3 * (1 - kv) ** 1.5, np.where(kv < 0, 0.6, 1.0))
    ffn_loss = np.where(ff > 0, (1 - ff) ** 1.5, np.where(ff < 0, 1.2, 1.5))
    ends = np.exp(-np.arange(layers) / 4.0) + np.exp(-np.arange(layers)[::-1] / 4.0)
    sensitivity = 0.01 * rng.lognormal(0.0, 0.5, layers) * (1 + 4 * ends)
    noise = rng.lognormal(0.0, 0.15, (layers, variants))
    scores = sensitivity[:, None] * (attn_loss + ffn_loss)[None, :] * noise
    jitter = 1 + 0.03 * rng.standard_normal((layers, variants))  # per-layer measurement spread
    costs = {
        "runtime_ms": runtime[None, :] * jitter,
        "params": np.broadcast_to(params, (layers, variants)).copy(),
        "memory_mib": (params * 2 / 2**20 + kv_cache_mib)[None, :] * np.ones((layers, 1)),
    }
    holes = rng.random((layers, variants)) < nan_fraction
    holes[:, [parent, variants - 1]] = False
    scores[holes] = np.nan
    embed = 2 * 128256 * hidden  # untied embeddings + LM head
    return SearchProblem(
        variant_names=[list(names) for _ in range(layers)],
        scores=scores,
        costs=costs,
        fixed_costs={
            "runtime_ms": 0.05 * layers * runtime[0],
            "params": embed,
            "memory_mib": embed * 2 / 2**20,
        },
        score_sense="min",
    )
