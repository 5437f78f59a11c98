"""Per-layer block configuration in the Nemotron-NAS ("DeciLM") checkpoint layout.

One `BlockConfig` per decoder layer = one attention variant + one FFN variant. `to_dict()` writes exactly the
`block_configs` entries that vLLM / TensorRT-LLM / llama.cpp read:

    {"attention": {"n_heads_in_group": 3, "no_op": false, "replace_with_linear": false},
     "ffn": {"ffn_mult": 4.0, "no_op": false, "replace_with_linear": false, "intermediate_size": 1536}}

Additions to the contract (documented here, all backwards compatible):
- `AttentionConfig.num_key_value_heads` (derived, not written to the dict, ignored by ==): the KV-head count is what
  the variant name "gqa_kv3" needs, but the Nemotron field is a ratio (`n_heads_in_group`), so `from_dict` fills it
  when the number of query heads is known.
- `FFNConfig.intermediate_size` is written to the dict whenever it is known (not only when the `ffn_mult` rule misses
  it): an explicit size can never be misread, and engines that only know `ffn_mult` ignore the extra key.
- `from_dict(d, hidden_size=..., num_attention_heads=...)` takes the parent sizes so every parsed config carries
  resolved sizes; unknown keys of real Nemotron checkpoints (sparsify, window_length, ...) are accepted while they
  are off (null/false) and rejected otherwise, because this model does not implement them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

ATTENTION_KEYS = ("n_heads_in_group", "no_op", "replace_with_linear")
FFN_KEYS = ("ffn_mult", "no_op", "replace_with_linear")


def ffn_mult_to_intermediate_size(ffn_mult: float, hidden_size: int) -> int:
    """Nemotron rule: round_up(int(2 * ffn_mult * hidden / 3), 256)."""
    size = int(2 * ffn_mult * hidden_size / 3)
    return math.ceil(size / 256) * 256


def intermediate_size_to_ffn_mult(intermediate_size: int, hidden_size: int) -> float:
    """Inverse of the Nemotron rule (exact where the size is a multiple of 256)."""
    return round(1.5 * intermediate_size / hidden_size, 6)


def _check_unknown_keys(kind: str, d: dict[str, Any], known: tuple[str, ...]) -> None:
    # Nemotron-51B configs carry extra switches (sparsify, window_length, ...); off is fine, on is not implemented.
    active = {k: v for k, v in d.items() if k not in known and v not in (None, False, [], {})}
    if active:
        raise ValueError(
            f"{kind} block config uses features this model does not implement: {active}. "
            f"Supported keys: {list(known)}."
        )


@dataclass(frozen=True)
class AttentionConfig:
    """Attention subblock: GQA (n_heads_in_group = query heads / KV heads), a linear map, or nothing."""

    n_heads_in_group: int | None = None
    no_op: bool = False
    replace_with_linear: bool = False
    num_key_value_heads: int | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.no_op and self.replace_with_linear:
            raise ValueError("attention block cannot be both no_op and replace_with_linear")
        if not (self.no_op or self.replace_with_linear) and not self.n_heads_in_group:
            raise ValueError("a GQA attention block needs n_heads_in_group >= 1")

    @classmethod
    def gqa(cls, num_key_value_heads: int, num_attention_heads: int) -> AttentionConfig:
        if num_key_value_heads < 1 or num_attention_heads % num_key_value_heads:
            raise ValueError(
                f"{num_key_value_heads} KV heads do not divide {num_attention_heads} query heads"
            )
        return cls(
            n_heads_in_group=num_attention_heads // num_key_value_heads,
            num_key_value_heads=num_key_value_heads,
        )

    @property
    def is_gqa(self) -> bool:
        return not (self.no_op or self.replace_with_linear)

    @property
    def name(self) -> str:
        if self.no_op:
            return "no_op"
        if self.replace_with_linear:
            return "linear"
        if self.num_key_value_heads is not None:
            return f"gqa_kv{self.num_key_value_heads}"
        return f"gqa_group{self.n_heads_in_group}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_heads_in_group": self.n_heads_in_group,
            "no_op": self.no_op,
            "replace_with_linear": self.replace_with_linear,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], num_attention_heads: int | None = None) -> AttentionConfig:
        _check_unknown_keys("attention", d, ATTENTION_KEYS)
        no_op, linear = bool(d.get("no_op", False)), bool(d.get("replace_with_linear", False))
        group = None if (no_op or linear) else d.get("n_heads_in_group")
        kv = None
        if group and num_attention_heads:
            if num_attention_heads % group:
                raise ValueError(
                    f"n_heads_in_group={group} does not divide {num_attention_heads} query heads"
                )
            kv = num_attention_heads // group
        return cls(n_heads_in_group=group, no_op=no_op, replace_with_linear=linear, num_key_value_heads=kv)


@dataclass(frozen=True)
class FFNConfig:
    """FFN subblock: SwiGLU of a given width, a linear map, or nothing."""

    ffn_mult: float | None = None
    no_op: bool = False
    replace_with_linear: bool = False
    intermediate_size: int | None = None

    def __post_init__(self) -> None:
        if self.no_op and self.replace_with_linear:
            raise ValueError("ffn block cannot be both no_op and replace_with_linear")
        if self.is_swiglu and self.ffn_mult is None and self.intermediate_size is None:
            raise ValueError("a SwiGLU ffn block needs ffn_mult or intermediate_size")

    @classmethod
    def of_size(cls, intermediate_size: int, hidden_size: int) -> FFNConfig:
        if intermediate_size < 1:
            raise ValueError(f"FFN intermediate size must be >= 1, got {intermediate_size}")
        return cls(
            ffn_mult=intermediate_size_to_ffn_mult(intermediate_size, hidden_size),
            intermediate_size=intermediate_size,
        )

    @property
    def is_swiglu(self) -> bool:
        return not (self.no_op or self.replace_with_linear)

    def resolved_intermediate_size(self, hidden_size: int) -> int:
        """The explicit size wins; otherwise the Nemotron ffn_mult rule."""
        if self.intermediate_size is not None:
            return self.intermediate_size
        assert self.ffn_mult is not None
        return ffn_mult_to_intermediate_size(self.ffn_mult, hidden_size)

    @property
    def name(self) -> str:
        if self.no_op:
            return "no_op"
        if self.replace_with_linear:
            return "linear"
        if self.intermediate_size is not None:
            return f"ffn_{self.intermediate_size}"
        return f"ffn_mult{self.ffn_mult:g}"

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "ffn_mult": self.ffn_mult,
            "no_op": self.no_op,
            "replace_with_linear": self.replace_with_linear,
        }
        if self.intermediate_size is not None:
            d["intermediate_size"] = self.intermediate_size
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], hidden_size: int | None = None) -> FFNConfig:
        _check_unknown_keys("ffn", d, (*FFN_KEYS, "intermediate_size"))
        no_op, linear = bool(d.get("no_op", False)), bool(d.get("replace_with_linear", False))
        if no_op or linear:
            return cls(no_op=no_op, replace_with_linear=linear)
        mult, size = d.get("ffn_mult"), d.get("intermediate_size")
        if size is None and mult is not None and hidden_size is not None:
            size = ffn_mult_to_intermediate_size(mult, hidden_size)
        return cls(ffn_mult=mult, intermediate_size=size)


@dataclass(frozen=True)
class BlockConfig:
    """One decoder layer: (attention variant, FFN variant)."""

    attention: AttentionConfig
    ffn: FFNConfig

    @property
    def name(self) -> str:
        return f"{self.attention.name}+{self.ffn.name}"

    def to_dict(self) -> dict[str, Any]:
        return {"attention": self.attention.to_dict(), "ffn": self.ffn.to_dict()}

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], hidden_size: int | None = None, num_attention_heads: int | None = None
    ) -> BlockConfig:
        if "attention" not in d or "ffn" not in d:
            raise ValueError(f"block config needs 'attention' and 'ffn' entries, got keys {sorted(d)}")
        return cls(
            attention=AttentionConfig.from_dict(d["attention"], num_attention_heads),
            ffn=FFNConfig.from_dict(d["ffn"], hidden_size),
        )
