"""Search space and block library: per layer, every candidate subblock initialised from the parent.

Search space (declarative, from a dict / YAML section):
    kv_heads: [3, 1]            # KV-head counts; must divide the parent's KV-head count (see below)
    ffn_fractions: [1.0, 0.5]   # fractions of the parent's FFN width, in (0, 1]
    attention_linear / attention_no_op / ffn_linear / ffn_no_op: true|false
    kv_init: mean_pool | importance;   ffn_init: truncate | activation;   linear_init: product | least_squares
    ffn_multiple_of: 1          # round reduced FFN widths to a multiple of this (e.g. 64 for GPU-friendly GEMMs)
The parent's own variants (its KV-head count, fraction 1.0) are always in the library, listed or not: the search
must be able to keep a layer as it is, and scoring compares against it.

Inits (Puzzle section 3, "init from the parent"; the code is in `puzzle.block_init`):
- GQA with fewer KV heads: reduced KV head j replaces the group of r = parent_kv / kv parent heads
  j*r .. j*r+r-1 — exactly the heads whose query heads it will serve (hence kv must divide parent_kv).
  `mean_pool` averages the group's K and V projections; `importance` keeps the group's most important head, with
  importance of a KV head = mean over calibration tokens of || sum over its query heads of W_o[:, head] @ attn_out ||_2
  (the norm of what the head adds to the residual stream).
- Reduced FFN: keep m channels of the SwiGLU. `truncate` keeps the first m; `activation` keeps the m largest
  mean_tokens(|silu(gate x) * up x|) * ||W_down[:, c]||_2 (the channel's contribution to the output) on calibration data.
- Linear attention: W_o @ W_v with V heads repeated over their query groups (the attention output if every token
  attended to itself); bias W_o @ b_v + b_o.
- Linear FFN: W_down @ diag(g) @ W_up, the linear part of the gate-free path with the SwiGLU gate replaced by its
  mean activation g_c = mean_tokens(silu(gate_c x)) on calibration data. Without calibration data g = 1, i.e. the
  note's plain W_down @ W_up. Why: on SmolLM2-135M (Austen text) the plain product overshoots badly (nMSE 0.8-21
  across layers, worse than a no-op), the gate-mean version starts at nMSE 0.45-0.85.
- `linear_init: least_squares` instead fits both linear variants to the parent subblock on the calibration tokens
  (ridge regression of the subblock's output on its normed input, with an intercept when the layer has a bias): the
  optimum of BLD's MSE for a linear map, which BLD then only fine-tunes. Why: the W_o @ W_v product assumes every
  token attends to itself and starts at nMSE 3-17 on SmolLM2 (worse than a no-op, nMSE 1), and 131K tokens of BLD
  left it above 1 in most layers.
- Parent variants are exact copies of the parent's subblocks (their RMSNorm weights are copied for every variant).

Library layout: `BlockLibrary` is an nn.Module; `attention[i]` / `ffn[i]` are ModuleDicts keyed by variant name
(no_op variants hold no module); `coupled[i]` holds coupled-BLD whole blocks keyed "attn+ffn" (ModuleDict with
"attention" / "ffn"). Saved as index.json + one safetensors file per layer.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from safetensors.torch import load_file, save_file
from torch import nn

from effinfer_core.atomic import atomic_dir

from .block_config import AttentionConfig, BlockConfig, FFNConfig
from .block_init import (
    calibration_stats,
    init_linear_attention,
    init_linear_ffn,
    init_reduced_attention,
    init_reduced_ffn,
)
from .configuration_decilm import DeciLMConfig
from .modeling_decilm import (
    DeciLMForCausalLM,
    build_attention_block,
    build_ffn_block,
)

KV_INITS = ("mean_pool", "importance")
FFN_INITS = ("truncate", "activation")
LINEAR_INITS = ("product", "least_squares")
LIBRARY_VERSION = 1


class SearchSpaceError(ValueError):
    """The search space does not fit the parent (message names the bad value and the valid options)."""


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


@dataclass
class SearchSpace:
    kv_heads: list[int]
    ffn_fractions: list[float]
    attention_linear: bool = True
    attention_no_op: bool = True
    ffn_linear: bool = True
    ffn_no_op: bool = True
    kv_init: str = "mean_pool"
    ffn_init: str = "activation"
    ffn_multiple_of: int = 1
    linear_init: str = "product"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(known))
        if unknown:
            raise SearchSpaceError(f"unknown search-space key(s) {unknown}; valid keys: {known}")
        missing = [k for k in ("kv_heads", "ffn_fractions") if k not in d]
        if missing:
            raise SearchSpaceError(
                f"search space needs {missing} (e.g. kv_heads: [1], ffn_fractions: [0.5, 0.25])"
            )
        space = cls(**d)
        space.kv_heads, space.ffn_fractions = list(space.kv_heads), list(space.ffn_fractions)
        return space

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self, parent_config: DeciLMConfig) -> None:
        """Raise SearchSpaceError naming the bad value and the valid options for this parent."""
        n_q, n_kv = parent_config.num_attention_heads, parent_config.num_key_value_heads
        valid_kv = _divisors(n_kv)
        for kv in self.kv_heads:
            if isinstance(kv, bool) or not isinstance(kv, int) or kv not in valid_kv:
                raise SearchSpaceError(
                    f"kv_heads entry {kv!r} is not valid for this parent ({n_q} query heads, {n_kv} KV heads): a "
                    f"reduced KV-head count must divide the parent's {n_kv} KV heads (so it also divides the "
                    f"{n_q} query heads); valid options: {valid_kv}"
                )
        for frac in self.ffn_fractions:
            if isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1:
                what = "is outside (0, 1]" if isinstance(frac, (int, float)) else "is not a number"
                raise SearchSpaceError(
                    f"ffn_fractions entry {frac!r} {what}; use fractions of the parent's FFN width "
                    f"{parent_config.intermediate_size}, e.g. [1.0, 0.75, 0.5, 0.25]"
                )
        if self.kv_init not in KV_INITS:
            raise SearchSpaceError(f"kv_init {self.kv_init!r} is not one of {list(KV_INITS)}")
        if self.ffn_init not in FFN_INITS:
            raise SearchSpaceError(f"ffn_init {self.ffn_init!r} is not one of {list(FFN_INITS)}")
        if self.linear_init not in LINEAR_INITS:
            raise SearchSpaceError(f"linear_init {self.linear_init!r} is not one of {list(LINEAR_INITS)}")
        if not isinstance(self.ffn_multiple_of, int) or self.ffn_multiple_of < 1:
            raise SearchSpaceError(f"ffn_multiple_of {self.ffn_multiple_of!r} must be a positive integer")

    def ffn_size(self, fraction: float, parent_size: int) -> int:
        """Width for `fraction` of the parent's FFN, rounded to `ffn_multiple_of` (at least one multiple)."""
        m = self.ffn_multiple_of
        return min(parent_size, max(m, round(fraction * parent_size / m) * m))

    def attention_variants(self, parent_config: DeciLMConfig) -> list[AttentionConfig]:
        """Parent first, then fewer KV heads (descending), linear, no_op."""
        self.validate(parent_config)
        n_q, n_kv = parent_config.num_attention_heads, parent_config.num_key_value_heads
        assert n_kv is not None  # LlamaConfig.__post_init__ fills it
        kvs = sorted({n_kv, *self.kv_heads}, reverse=True)
        out = [AttentionConfig.gqa(kv, n_q) for kv in kvs]
        if self.attention_linear:
            out.append(AttentionConfig(replace_with_linear=True))
        if self.attention_no_op:
            out.append(AttentionConfig(no_op=True))
        return out

    def ffn_variants(self, parent_config: DeciLMConfig) -> list[FFNConfig]:
        """Parent first, then narrower SwiGLUs (descending), linear, no_op."""
        self.validate(parent_config)
        full, hidden = parent_config.intermediate_size, parent_config.hidden_size
        sizes = sorted({full, *(self.ffn_size(f, full) for f in self.ffn_fractions)}, reverse=True)
        out = [FFNConfig.of_size(s, hidden) for s in sizes]
        if self.ffn_linear:
            out.append(FFNConfig(replace_with_linear=True))
        if self.ffn_no_op:
            out.append(FFNConfig(no_op=True))
        return out


class BlockLibrary(nn.Module):
    """All candidate subblocks of every layer, keyed by layer and variant name."""

    def __init__(
        self,
        parent_config: DeciLMConfig,
        attention_variants: list[AttentionConfig],
        ffn_variants: list[FFNConfig],
        space: SearchSpace | None = None,
    ) -> None:
        super().__init__()
        self.parent_config = parent_config
        self.parent_block = parent_config.parent_block_config()
        self.attention_variants = list(attention_variants)
        self.ffn_variants = list(ffn_variants)
        self.space = space
        L = parent_config.num_hidden_layers
        self.attention = nn.ModuleList(nn.ModuleDict() for _ in range(L))
        self.ffn = nn.ModuleList(nn.ModuleDict() for _ in range(L))
        self.coupled = nn.ModuleList(nn.ModuleDict() for _ in range(L))

    @property
    def num_layers(self) -> int:
        return len(self.attention)

    @property
    def attention_names(self) -> list[str]:
        return [a.name for a in self.attention_variants]

    @property
    def ffn_names(self) -> list[str]:
        return [f.name for f in self.ffn_variants]

    def attention_config(self, name: str) -> AttentionConfig:
        return self._by_name(self.attention_variants, name, "attention")

    def ffn_config(self, name: str) -> FFNConfig:
        return self._by_name(self.ffn_variants, name, "ffn")

    @staticmethod
    def _by_name(variants: list, name: str, kind: str):
        for v in variants:
            if v.name == name:
                return v
        raise KeyError(f"no {kind} variant {name!r} in the library; it has {[v.name for v in variants]}")

    def attention_block(self, layer: int, name: str) -> nn.Module | None:
        """Decoupled attention candidate of `layer` (None for no_op)."""
        return None if self.attention_config(name).no_op else self.attention[layer][name]

    def ffn_block(self, layer: int, name: str) -> nn.Module | None:
        """Decoupled FFN candidate of `layer` (None for no_op)."""
        return None if self.ffn_config(name).no_op else self.ffn[layer][name]

    def block(self, layer: int, block: BlockConfig) -> tuple[nn.Module | None, nn.Module | None]:
        """(attention, ffn) modules for a whole block: the coupled-BLD pair if trained, else the decoupled ones."""
        pair = self.coupled[layer][block.name] if self.has_coupled(layer, block) else None
        if pair is not None:
            return (
                pair["attention"] if "attention" in pair else None,
                pair["ffn"] if "ffn" in pair else None,
            )
        return self.attention_block(layer, block.attention.name), self.ffn_block(layer, block.ffn.name)

    def has_coupled(self, layer: int, block: BlockConfig) -> bool:
        """Whether coupled BLD has a pair of its own for `block` at `layer`."""
        return block.name in self.coupled[layer]

    def add_coupled(
        self, layer: int, block: BlockConfig, attn: nn.Module | None, ffn: nn.Module | None
    ) -> None:
        pair = nn.ModuleDict()
        if attn is not None:
            pair["attention"] = attn
        if ffn is not None:
            pair["ffn"] = ffn
        self.coupled[layer][block.name] = pair

    def is_parent(self, variant: AttentionConfig | FFNConfig) -> bool:
        return variant == self.parent_block.attention or variant == self.parent_block.ffn

    # ---- persistence

    def save(self, out_dir: str | Path) -> Path:
        """index.json + layer_XXX.safetensors, written to a temp folder then renamed into place."""
        out_dir = Path(out_dir)
        out_dir.parent.mkdir(parents=True, exist_ok=True)
        with atomic_dir(out_dir) as tmp:
            layers = []
            for i in range(self.num_layers):
                tensors = {}
                for kind, dicts in (
                    ("attention", self.attention),
                    ("ffn", self.ffn),
                    ("coupled", self.coupled),
                ):
                    for k, v in dicts[i].state_dict().items():
                        tensors[f"{kind}.{k}"] = v.detach().cpu().contiguous()
                fname = f"layer_{i:03d}.safetensors"
                save_file(tensors, str(tmp / fname))
                layers.append({"file": fname, "coupled": list(self.coupled[i].keys())})
            index = {
                "version": LIBRARY_VERSION,
                "parent": _parent_signature(self.parent_config),
                "space": self.space.to_dict() if self.space is not None else None,
                "attention_variants": [a.to_dict() for a in self.attention_variants],
                "ffn_variants": [f.to_dict() for f in self.ffn_variants],
                "layers": layers,
            }
            (tmp / "index.json").write_text(json.dumps(index, indent=1))
        return out_dir

    @classmethod
    def load(cls, in_dir: str | Path, parent: DeciLMForCausalLM) -> BlockLibrary:
        in_dir = Path(in_dir)
        index_file = in_dir / "index.json"
        if not index_file.is_file():
            raise FileNotFoundError(f"{in_dir} is not a block library (no index.json)")
        index = json.loads(index_file.read_text())
        cfg = parent.config
        if index.get("parent") != _parent_signature(cfg):
            raise ValueError(
                f"block library {in_dir} was built for parent {index.get('parent')}, "
                f"not for this one {_parent_signature(cfg)}; rebuild the library"
            )
        kw = {"hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads}
        lib = cls(
            cfg,
            [AttentionConfig.from_dict(d, kw["num_attention_heads"]) for d in index["attention_variants"]],
            [FFNConfig.from_dict(d, kw["hidden_size"]) for d in index["ffn_variants"]],
            SearchSpace.from_dict(index["space"]) if index.get("space") else None,
        )
        dtype = next(parent.parameters()).dtype
        for i, entry in enumerate(index["layers"]):
            lib._build_empty_layer(i, entry["coupled"])
            state = load_file(str(in_dir / entry["file"]))
            for kind, dicts in (("attention", lib.attention), ("ffn", lib.ffn), ("coupled", lib.coupled)):
                part = {k[len(kind) + 1 :]: v for k, v in state.items() if k.startswith(kind + ".")}
                dicts[i].to(dtype).load_state_dict(part, strict=True)
        return lib

    def _build_empty_layer(self, i: int, coupled_names: list[str]) -> None:
        cfg = self.parent_config
        for a in self.attention_variants:
            if not a.no_op:
                self.attention[i][a.name] = build_attention_block(cfg, i, a)
        for f in self.ffn_variants:
            if not f.no_op:
                self.ffn[i][f.name] = build_ffn_block(cfg, f)
        for name in coupled_names:
            a_name, f_name = name.split("+")
            a, f = self.attention_config(a_name), self.ffn_config(f_name)
            self.add_coupled(i, BlockConfig(a, f), build_attention_block(cfg, i, a), build_ffn_block(cfg, f))


def _parent_signature(cfg: DeciLMConfig) -> dict[str, int]:
    return {
        k: getattr(cfg, k)
        for k in (
            "num_hidden_layers",
            "hidden_size",
            "num_attention_heads",
            "num_key_value_heads",
            "intermediate_size",
            "head_dim",
        )
    }


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def build_library(
    parent: DeciLMForCausalLM, space: SearchSpace, calib_batches: Iterable[Any] | None = None
) -> BlockLibrary:
    """Every layer's candidates, initialised from the parent (see module docstring).

    `calib_batches` (dicts with "input_ids" or LongTensors) are needed for kv_init="importance",
    ffn_init="activation" or linear_init="least_squares", and used when given for the linear-FFN gate means; one
    pass over them collects the statistics for all layers.
    """
    cfg = parent.config
    if any(b != cfg.parent_block_config() for b in parent.block_configs):
        raise ValueError("build_library needs the parent itself (every block equal to the parent's block)")
    attn_variants, ffn_variants = space.attention_variants(cfg), space.ffn_variants(cfg)
    stats = None
    fitted = space.linear_init == "least_squares" and (space.attention_linear or space.ffn_linear)
    if calib_batches is None and (space.kv_init == "importance" or space.ffn_init == "activation" or fitted):
        raise ValueError(
            f"kv_init={space.kv_init!r} / ffn_init={space.ffn_init!r} / linear_init="
            f"{space.linear_init!r} need calibration batches; pass calib_batches or use "
            "kv_init='mean_pool', ffn_init='truncate', linear_init='product'"
        )
    if calib_batches is not None:
        with _eval_mode(parent):
            stats = calibration_stats(parent, calib_batches, linear_fits=fitted)
    lib = BlockLibrary(cfg, attn_variants, ffn_variants, space)
    for i, layer in enumerate(parent.model.layers):
        for a in attn_variants:
            if a.no_op:
                continue
            if a == lib.parent_block.attention:
                block = copy.deepcopy(layer.attn_block)
            elif a.replace_with_linear:
                block = init_linear_attention(
                    layer.attn_block, cfg, stats.attention_fit[i] if fitted else None
                )
            else:
                imp = stats.kv_importance[i] if stats is not None and space.kv_init == "importance" else None
                block = init_reduced_attention(layer.attn_block, cfg, i, a.num_key_value_heads, imp)
            lib.attention[i][a.name] = block
        for f in ffn_variants:
            if f.no_op:
                continue
            if f == lib.parent_block.ffn:
                block = copy.deepcopy(layer.ffn_block)
            elif f.replace_with_linear:
                block = init_linear_ffn(
                    layer.ffn_block,
                    cfg,
                    stats.gate_mean[i] if stats is not None else None,
                    stats.ffn_fit[i] if fitted else None,
                )
            else:
                contrib = (
                    stats.ffn_contribution[i]
                    if stats is not None and space.ffn_init == "activation"
                    else None
                )
                block = init_reduced_ffn(layer.ffn_block, cfg, f.intermediate_size, contrib)
            lib.ffn[i][f.name] = block
    return lib.to(next(parent.parameters()).device)
