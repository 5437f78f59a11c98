"""Measured costs of every subblock variant for one deployment scenario (never analytic).

Scenario = (batch B, prefill length P, decode length D, dtype). For each subblock variant:

    prefill_ms      the subblock on [B, P, H] (attention: causal, writing a fresh KV cache)
    decode_ms       the subblock on [B, 1, H] with a KV cache of C = P + D // 2 tokens (the middle of the decode:
                    attention's per-token cost grows linearly with the cache, so the middle is its mean over the
                    decode), the cache cropped back to C after every step so every timed step sees the same length
    runtime_ms      prefill_ms + D * decode_ms            (the variant's share of one generation)
    params          parameter count
    memory_mib      weights + KV cache, KV = (P + D) * B * 2 * n_kv * head_dim * bytes
A no-op costs 0 on every axis. Every layer's variant of the same config is the same module shape, so each distinct
variant config is measured once and its costs are used for every layer. "Once" runs L fresh copies back to back
(L = the parent's layer count) and divides by L: a single module's weights stay in the CPU cache and look cheaper
than in the model, where every layer's weights stream from memory (seen on SmolLM2: one cached FFN looked as fast
as one 4x narrower, and predicted/measured runtimes were off by 20%).

The non-block part (token embedding, final norm, LM head on the last position, argmax) is measured the same way
(its parameters and memory are every child's fixed weights). Per-forward work (positions, masks, cache objects, output
objects), layer dispatch and residual adds are inside no subblock, so the sum of parts misses them. Two measured
whole generations (`measure_generation`: prefill + greedy decode with the KV cache, same scenario) calibrate that:
    skeleton   = the parent with every block a no-op  -> the fixed runtime of every child
    overhead   = (parent - skeleton - sum of the parent's subblocks) / (2 L), added to every non-no-op subblock
A child's predicted runtime = skeleton + sum over its non-no-op subblocks of (measured time + overhead); the pipeline
checks it against the child's measured generation (predicted / measured; the target is within 10%).

All timings go through `benchmarks.yardstick.time_fn` (warm-up, device sync) and are medians.
"""

from __future__ import annotations

import copy
import inspect
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.yardstick import count_params, time_fn

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

    @property
    def decode_cache_len(self) -> int:
        """KV-cache length at which a decode step is timed: the middle of the decode."""
        return self.prefill + self.decode // 2

    def runtime_ms(self, prefill_ms: float, decode_ms: float) -> float:
        return prefill_ms + self.decode * decode_ms

    def tokens_per_s(self, runtime_ms: float) -> float:
        return self.batch * self.decode * 1000.0 / runtime_ms

    def runtime_budget_ms(self, tokens_per_s: float) -> float:
        return self.batch * self.decode * 1000.0 / tokens_per_s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    return 1000.0 * statistics.median(time_fn(fn, device=device, warmup=warmup, iters=iters))


def kv_cache_bytes(scenario: Scenario, n_kv_heads: int, head_dim: int) -> int:
    """KV cache of one attention subblock: (P + D) * B * 2 (K and V) * n_kv * head_dim * bytes."""
    elem = torch.empty((), dtype=scenario.torch_dtype).element_size()
    return (scenario.prefill + scenario.decode) * scenario.batch * 2 * n_kv_heads * head_dim * elem


def _weights_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _record(scenario: Scenario, prefill_ms: float, decode_ms: float, params: int, memory_bytes: int) -> dict:
    return {"prefill_ms": prefill_ms, "decode_ms": decode_ms, "runtime_ms": scenario.runtime_ms(prefill_ms, decode_ms),
            "params": params, "memory_mib": memory_bytes / 2**20}


NO_OP_COST = {"prefill_ms": 0.0, "decode_ms": 0.0, "runtime_ms": 0.0, "params": 0, "memory_mib": 0.0}


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _as_copies(block: nn.Module | Sequence[nn.Module] | None, scenario: Scenario,
               device: torch.device) -> list[nn.Module]:
    blocks = [] if block is None else [block] if isinstance(block, nn.Module) else list(block)
    return [b.to(device=device, dtype=scenario.torch_dtype).eval() for b in blocks]


@torch.inference_mode()
def measure_attention(block: nn.Module | Sequence[nn.Module] | None, rotary: nn.Module, scenario: Scenario, *,
                      hidden_size: int, head_dim: int, n_kv_heads: int, device: torch.device, warmup: int = 3,
                      iters: int = 10) -> dict:
    """Costs of one attention subblock (see module docstring); `rotary` gives the (cos, sin) position embeddings.

    `block` may be several copies of the same variant: they run one after the other (each with its own cache) and
    the time is divided by their number, so the weights stream from memory as in a model with many layers instead
    of staying in the CPU cache.
    """
    blocks = _as_copies(block, scenario, device)
    if not blocks:
        return dict(NO_OP_COST)
    from transformers import DynamicCache

    B, P, C = scenario.batch, scenario.prefill, scenario.decode_cache_len
    kw = {"dtype": scenario.torch_dtype, "device": device}

    def inputs(start: int, length: int) -> tuple[torch.Tensor, tuple]:
        x = torch.randn(B, length, hidden_size, **kw)
        positions = torch.arange(start, start + length, device=device)
        return x, rotary(x, positions[None].expand(B, -1))

    x_p, pe_p = inputs(0, P)
    prefill = median_ms(lambda: [b(x_p, pe_p, None, DynamicCache()) for b in blocks], device, warmup, iters)

    caches = [DynamicCache() for _ in blocks]
    x_c, pe_c = inputs(0, C)
    for b, cache in zip(blocks, caches, strict=True):
        b(x_c, pe_c, None, cache)
    x_1, pe_1 = inputs(C, 1)

    def step() -> None:
        for b, cache in zip(blocks, caches, strict=True):
            b(x_1, pe_1, None, cache)
            if cache.get_seq_length() > C:  # linear attention keeps no cache
                cache.crop(C - cache.get_seq_length())  # negative = tokens to drop (transformers 5)

    decode = median_ms(step, device, warmup, iters)
    n = len(blocks)
    has_cache = caches[0].get_seq_length() > 0
    memory = _weights_bytes(blocks[0]) + (kv_cache_bytes(scenario, n_kv_heads, head_dim) if has_cache else 0)
    return _record(scenario, prefill / n, decode / n, count_params(blocks[0]), memory)


@torch.inference_mode()
def measure_ffn(block: nn.Module | Sequence[nn.Module] | None, scenario: Scenario, *, hidden_size: int,
                device: torch.device, warmup: int = 3, iters: int = 10) -> dict:
    """Costs of one FFN subblock on [B, P, H] (prefill) and [B, 1, H] (decode); copies as in `measure_attention`."""
    blocks = _as_copies(block, scenario, device)
    if not blocks:
        return dict(NO_OP_COST)
    kw = {"dtype": scenario.torch_dtype, "device": device}
    x_p = torch.randn(scenario.batch, scenario.prefill, hidden_size, **kw)
    x_1 = torch.randn(scenario.batch, 1, hidden_size, **kw)
    n = len(blocks)
    prefill = median_ms(lambda: [b(x_p) for b in blocks], device, warmup, iters) / n
    decode = median_ms(lambda: [b(x_1) for b in blocks], device, warmup, iters) / n
    return _record(scenario, prefill, decode, count_params(blocks[0]), _weights_bytes(blocks[0]))


@torch.inference_mode()
def measure_nonblock(model: nn.Module, scenario: Scenario, *, device: torch.device, warmup: int = 3,
                     iters: int = 10) -> dict:
    """Embedding lookup + final norm + LM head on the last position + greedy argmax, for prefill and one decode step.

    Parameters/memory count the embedding, final norm and LM head once each (a tied LM head shares the embedding).
    """
    model = model.to(device=device, dtype=scenario.torch_dtype).eval()
    embed, norm, head = model.model.embed_tokens, model.model.norm, model.lm_head
    vocab = embed.num_embeddings

    def run(length: int) -> Callable[[], Any]:
        ids = torch.randint(0, vocab, (scenario.batch, length), device=device)

        def fn() -> torch.Tensor:
            h = embed(ids)
            return head(norm(h[:, -1:])).argmax(-1)

        return fn

    prefill = median_ms(run(scenario.prefill), device, warmup, iters)
    decode = median_ms(run(1), device, warmup, iters)
    unique = {id(p): p for m in (embed, norm, head) for p in m.parameters()}
    params = sum(p.numel() for p in unique.values())
    memory = sum(p.numel() * p.element_size() for p in unique.values())
    return _record(scenario, prefill, decode, params, memory)


# -- whole-model generation ---------------------------------------------------------------------------------------
class GreedyGenerator:
    """Prefill + `decode` greedy steps with the model's KV cache: the whole-model measurement of a scenario."""

    def __init__(self, model: nn.Module, scenario: Scenario, device: torch.device, seed: int = 0):
        self.model, self.scenario, self.device = model, scenario, device
        vocab = model.config.vocab_size
        gen = torch.Generator().manual_seed(seed)
        self.prompt = torch.randint(0, vocab, (scenario.batch, scenario.prefill), generator=gen).to(device)
        forward = model.forward
        self.keep_last = _accepts(forward, "logits_to_keep")  # LM head on the last position only, as generate does
        self.pass_positions = _accepts(forward, "position_ids")

    def _forward(self, ids: torch.Tensor, start: int, cache: Any) -> Any:
        kw: dict[str, Any] = {"use_cache": True, "past_key_values": cache}
        positions = torch.arange(start, start + ids.shape[1], device=self.device)
        if self.pass_positions:
            kw["position_ids"] = positions[None].expand(ids.shape[0], -1)
        if self.keep_last:
            kw["logits_to_keep"] = 1
        return self.model(input_ids=ids, **kw)

    def prefill(self) -> tuple[torch.Tensor, Any]:
        out = self._forward(self.prompt, 0, None)
        return out.logits[:, -1:].argmax(-1), out.past_key_values

    def __call__(self) -> torch.Tensor:
        token, cache = self.prefill()
        tokens = [token]
        for t in range(self.scenario.decode):
            out = self._forward(token, self.scenario.prefill + t, cache)
            token, cache = out.logits[:, -1:].argmax(-1), out.past_key_values
            tokens.append(token)
        return torch.cat(tokens, dim=1)


@torch.inference_mode()
def measure_generation(model: nn.Module, scenario: Scenario, *, device: torch.device, warmup: int = 1,
                       iters: int = 3) -> dict:
    """Measured whole-model prefill and full generation: runtime_ms, prefill_ms, decode_ms (per token), tokens/s.

    The model is moved to `device` and cast to the scenario dtype in place.
    """
    model = model.to(device=device, dtype=scenario.torch_dtype).eval()
    gen = GreedyGenerator(model, scenario, device)
    prefill = median_ms(gen.prefill, device, warmup, iters)
    total = median_ms(gen, device, warmup, iters)
    return {"prefill_ms": prefill, "decode_ms": (total - prefill) / scenario.decode, "runtime_ms": total,
            "tokens_per_s": scenario.tokens_per_s(total)}


# -- the cost table -----------------------------------------------------------------------------------------------
@dataclass
class CostTable:
    """Measured costs of each distinct variant for one scenario, plus the fixed part and the in-model overhead."""

    scenario: Scenario
    device: str
    attention: dict[str, dict]
    ffn: dict[str, dict]
    nonblock: dict  # embeddings + final norm + LM head, measured alone (params, memory, times)
    skeleton: dict  # measured generation of the parent with every block a no-op: the fixed runtime of any child
    overhead_per_subblock: dict  # prefill_ms, decode_ms, runtime_ms added to every non-no-op subblock
    calibration: dict  # the parent's measured vs predicted runtime that set the overhead

    TIMES = ("prefill_ms", "decode_ms", "runtime_ms")

    def subblock(self, kind: str, name: str) -> dict[str, float]:
        """Costs of one subblock variant as it runs inside the model (a no-op stays 0)."""
        cost = dict((self.attention if kind == "attention" else self.ffn)[name])
        if name != "no_op":
            for k in self.TIMES:
                cost[k] += self.overhead_per_subblock[k]
        return cost

    def fixed(self) -> dict[str, float]:
        """Costs every child pays whatever its blocks: the skeleton's runtime, the non-block weights."""
        return {**{k: float(self.skeleton[k]) for k in self.TIMES},
                "params": float(self.nonblock["params"]), "memory_mib": float(self.nonblock["memory_mib"])}

    def predict(self, blocks: Sequence[tuple[str, str]]) -> dict[str, float]:
        """Predicted totals of a model given per layer (attention variant name, FFN variant name)."""
        total = self.fixed()
        for attn, ffn in blocks:
            for cost in (self.subblock("attention", attn), self.subblock("ffn", ffn)):
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
        return cls(**{**d, "scenario": Scenario(**d["scenario"])})


def measure_variants(
    config: Any,
    rotary: nn.Module,
    attention_variants: Sequence[Any],
    ffn_variants: Sequence[Any],
    scenario: Scenario,
    *,
    build_attention: Callable[[Any, int, Any], nn.Module | None],
    build_ffn: Callable[[Any, Any], nn.Module | None],
    device: torch.device,
    warmup: int = 3,
    iters: int = 10,
    copies: int | None = None,
    progress: bool = True,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Measure each distinct attention / FFN variant config once; name -> costs.

    Each variant runs as `copies` fresh modules (default: one per parent layer) back to back, so its weights come
    from memory as they do in the model (one module alone would sit in the CPU cache and look too cheap).
    """
    copies = copies or config.num_hidden_layers
    hidden = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or hidden // config.num_attention_heads
    attention, ffn = {}, {}
    torch.manual_seed(0)
    items = [("attention", v) for v in attention_variants] + [("ffn", v) for v in ffn_variants]
    for kind, variant in tqdm(items, desc="measuring subblocks", disable=not progress):
        if kind == "attention":
            if variant.name in attention:
                continue
            n_kv = variant.num_key_value_heads or (config.num_attention_heads // (variant.n_heads_in_group or 1))
            blocks = [build_attention(config, 0, variant) for _ in range(copies)]
            attention[variant.name] = measure_attention(
                None if blocks[0] is None else blocks, rotary, scenario, hidden_size=hidden, head_dim=head_dim,
                n_kv_heads=n_kv, device=device, warmup=warmup, iters=iters)
        elif variant.name not in ffn:
            blocks = [build_ffn(config, variant) for _ in range(copies)]
            ffn[variant.name] = measure_ffn(None if blocks[0] is None else blocks, scenario, hidden_size=hidden, device=device,
                                            warmup=warmup, iters=iters)
    return attention, ffn


def build_cost_table(
    parent: nn.Module,
    attention_variants: Sequence[Any],
    ffn_variants: Sequence[Any],
    scenario: Scenario,
    *,
    build_attention: Callable[[Any, int, Any], nn.Module | None],
    build_ffn: Callable[[Any, Any], nn.Module | None],
    device: torch.device,
    warmup: int = 3,
    iters: int = 10,
    copies: int | None = None,
    progress: bool = True,
) -> CostTable:
    """Measure every variant, the non-block part, and two whole generations that calibrate the in-model overhead.

    skeleton = the parent with every block a no-op (measured): embeddings, LM head, per-forward work (positions,
    masks, cache, output objects) and the empty layers' dispatch -- the fixed runtime of every child.
    overhead_per_subblock = (measured parent - skeleton - sum of the parent's measured subblocks) / (2 L): the
    residual add and call overhead a subblock has inside a layer and not alone. May be negative when a subblock
    alone runs slower than inside the model (cold caches); it is a measured correction, not a model.
    The parent's (attention, FFN) variant names are read from `parent.config.parent_block_config()`.
    """
    from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig

    config = parent.config
    parent = parent.to(device=device, dtype=scenario.torch_dtype).eval()
    attention, ffn = measure_variants(
        config, parent.model.rotary_emb, attention_variants, ffn_variants, scenario, build_attention=build_attention,
        build_ffn=build_ffn, device=device, warmup=warmup, iters=iters, copies=copies, progress=progress)
    nonblock = measure_nonblock(parent, scenario, device=device, warmup=warmup, iters=iters)
    gen_iters = max(3, iters // 3)
    measured = measure_generation(parent, scenario, device=device, warmup=1, iters=gen_iters)
    skeleton_model = copy.deepcopy(parent)
    empty = BlockConfig(AttentionConfig(no_op=True), FFNConfig(no_op=True))
    for i in range(config.num_hidden_layers):
        skeleton_model.replace_block(i, empty, None, None)
    skeleton = measure_generation(skeleton_model, scenario, device=device, warmup=1, iters=gen_iters)
    del skeleton_model

    pa = config.parent_block_config()
    L = config.num_hidden_layers
    zero = {"prefill_ms": 0.0, "decode_ms": 0.0, "runtime_ms": 0.0}
    table = CostTable(scenario, str(device), attention, ffn, nonblock, skeleton, zero, {})
    parts = table.predict([(pa.attention.name, pa.ffn.name)] * L)
    over = {k: (measured[k] - parts[k]) / (2 * L) for k in ("prefill_ms", "decode_ms")}
    over["runtime_ms"] = scenario.runtime_ms(over["prefill_ms"], over["decode_ms"])
    table.overhead_per_subblock = over
    table.calibration = {"parent_measured": measured, "skeleton_measured": skeleton,
                         "parent_sum_of_parts": parts,
                         "sum_of_parts_over_measured": parts["runtime_ms"] / measured["runtime_ms"]}
    return table
