"""The cost model of a search space for one deployment scenario: `Scenario` and `CostTable` (never analytic).

Scenario = (batch B, prefill length P, decode length D, dtype). A `CostTable` holds, per block (attention variant,
FFN variant) of the space, one layer's measured time as it runs inside the model -- prefill_ms, decode_ms (per
token, averaged over the decode, so attention's cost growing with the cache is in it), runtime_ms = prefill_ms + D *
decode_ms -- plus the skeleton (the parent with every block a no-op: the fixed runtime of every child) and the
non-block part (token embedding, final norm, LM head on the last position, argmax; its parameters and memory are
every child's fixed weights). `puzzle.probes.build_cost_table` measures one; `puzzle.timing` times whole generations.
Per subblock variant: params and memory_mib = weights + KV cache, KV = (P + D) * B * 2 * n_kv * head_dim * bytes; a
block's are the sums of its two subblocks'.

A child's predicted runtime = skeleton + the sum of its layers' block times (`CostTable.predict`); the pipeline
checks it against the child's measured generation (predicted / measured; the target is within 10%).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Scenario:
    """A deployment scenario: `batch` sequences, `prefill` prompt tokens, `decode` generated tokens, `dtype`."""

    batch: int = 1
    prefill: int = 128
    decode: int = 128
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if min(self.batch, self.prefill, self.decode) < 1:
            raise ValueError(f"scenario batch/prefill/decode must be >= 1, got {self}")
        if self.dtype not in DTYPES:
            raise ValueError(f"scenario dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def runtime_ms(self, prefill_ms: float, decode_ms: float) -> float:
        return prefill_ms + self.decode * decode_ms

    def tokens_per_s(self, runtime_ms: float) -> float:
        return self.batch * self.decode * 1000.0 / runtime_ms

    def runtime_budget_ms(self, tokens_per_s: float) -> float:
        return self.batch * self.decode * 1000.0 / tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def kv_cache_bytes(scenario: Scenario, n_kv_heads: int, head_dim: int) -> int:
    """KV cache of one attention subblock: (P + D) * B * 2 (K and V) * n_kv * head_dim * bytes."""
    elem = torch.empty((), dtype=scenario.torch_dtype).element_size()
    return (scenario.prefill + scenario.decode) * scenario.batch * 2 * n_kv_heads * head_dim * elem


def block_name(attention: str, ffn: str) -> str:
    return f"{attention}+{ffn}"


@dataclass
class CostTable:
    """Measured costs of every (attention, FFN) block of a search space for one scenario, plus the fixed part."""

    scenario: Scenario
    device: str
    attention: dict[str, dict]  # per attention variant: params, memory_mib (weights + KV cache)
    ffn: dict[str, dict]  # per FFN variant: params, memory_mib
    blocks: dict[
        str, dict
    ]  # per block "attention+ffn": one layer's prefill_ms, decode_ms, runtime_ms, params, memory
    nonblock: dict  # embeddings + final norm + LM head, measured alone (params, memory, times)
    skeleton: (
        dict  # measured generation of the parent with every block a no-op: the fixed runtime of any child
    )
    calibration: (
        dict  # the parent and skeleton as measured, and how far block times are from their subblocks' sums
    )

    TIMES = ("prefill_ms", "decode_ms", "runtime_ms")

    def block(self, attention: str, ffn: str) -> dict[str, float]:
        """Costs of one layer holding the block (attention variant, FFN variant) as it runs inside the model."""
        return dict(self.blocks[block_name(attention, ffn)])

    def fixed(self) -> dict[str, float]:
        """Costs every child pays whatever its blocks: the skeleton's runtime, the non-block weights."""
        return {
            **{k: float(self.skeleton[k]) for k in self.TIMES},
            "params": float(self.nonblock["params"]),
            "memory_mib": float(self.nonblock["memory_mib"]),
        }

    def predict(self, blocks: Sequence[tuple[str, str]]) -> dict[str, float]:
        """Predicted totals of a model given per layer (attention variant name, FFN variant name)."""
        total = self.fixed()
        for attn, ffn in blocks:
            cost = self.block(attn, ffn)
            for k in total:
                total[k] += cost[k]
        total["tokens_per_s"] = self.scenario.tokens_per_s(total["runtime_ms"])
        return total

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["scenario"] = self.scenario.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CostTable:
        if "blocks" not in d:
            raise ValueError(
                "these costs were written by an older version (no per-block times); run the measure "
                "stage again (`puzzle measure`)"
            )
        return cls(**{**d, "scenario": Scenario(**d["scenario"])})
