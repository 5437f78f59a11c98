"""Measured costs of every subblock variant for one deployment scenario (never analytic).

Scenario = (batch B, prefill length P, decode length D, dtype). Every time below is a measured whole generation
(`measure_generation`: prefill + greedy decode with the KV cache, through `benchmarks.yardstick.time_fn`, medians):

    skeleton        the parent with every block a no-op: embeddings, LM head, per-forward work, empty layers --
                    the fixed runtime of every child
    a variant       (probe - skeleton) / L, where the probe is the skeleton with that variant in every layer's
                    attention (or FFN) slot: prefill_ms, decode_ms (per token, averaged over the decode, so
                    attention's cost growing with the cache is in it), runtime_ms = prefill_ms + D * decode_ms
    overhead        (parent - skeleton - L * (parent attention + parent FFN)) / (2 L), added to every non-no-op
                    subblock: what an attention and an FFN in one layer cost beyond their probes
Per variant also: params and memory_mib = weights + KV cache, KV = (P + D) * B * 2 * n_kv * head_dim * bytes.
A no-op costs 0 on every axis. Every layer's variant of the same config has the same shape, so each distinct variant
is measured once. The non-block part (token embedding, final norm, LM head on the last position, argmax) is also
timed alone (`measure_nonblock`); its parameters and memory are every child's fixed weights.

A child's predicted runtime = skeleton + sum over its non-no-op subblocks of (variant time + overhead); the pipeline
checks it against the child's measured generation (predicted / measured; the target is within 10%).
Why probes and not one module timed alone: alone, even as L copies back to back, part of a small variant's weights
stayed in the CPU cache, and children made of small variants ran 5-12% slower than predicted (SmolLM2, 2-core Xeon).
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


def skeleton_of(model: nn.Module) -> nn.Module:
    """A copy of `model` with every block a no-op (the part of the runtime that every child pays)."""
    from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig

    skeleton = copy.deepcopy(model)
    empty = BlockConfig(AttentionConfig(no_op=True), FFNConfig(no_op=True))
    for i in range(skeleton.config.num_hidden_layers):
        skeleton.replace_block(i, empty, None, None)
    return skeleton


def _probe(skeleton: nn.Module, kind: str, variant: Any, build: Callable[..., nn.Module | None]) -> nn.Module:
    """The skeleton with `variant` as every layer's attention (kind "attention") or FFN (kind "ffn")."""
    from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig

    model = copy.deepcopy(skeleton)
    config = model.config
    for i in range(config.num_hidden_layers):
        if kind == "attention":
            model.replace_block(i, BlockConfig(variant, FFNConfig(no_op=True)), build(config, i, variant), None)
        else:
            model.replace_block(i, BlockConfig(AttentionConfig(no_op=True), variant), None, build(config, variant))
    return model


def _module_record(scenario: Scenario, module: nn.Module, head_dim: int) -> dict:
    """Params and memory (weights + KV cache when the module keeps one) of one subblock; times filled in later."""
    has_cache = getattr(module, "has_kv_cache", False)
    kv = kv_cache_bytes(scenario, module.self_attn.num_key_value_heads, head_dim) if has_cache else 0
    return _record(scenario, 0.0, 0.0, count_params(module), _weights_bytes(module) + kv)


@torch.inference_mode()
def measure_variants(
    skeleton: nn.Module,
    skeleton_cost: dict,
    attention_variants: Sequence[Any],
    ffn_variants: Sequence[Any],
    scenario: Scenario,
    *,
    build_attention: Callable[[Any, int, Any], nn.Module | None],
    build_ffn: Callable[[Any, Any], nn.Module | None],
    device: torch.device,
    warmup: int = 1,
    iters: int = 5,
    progress: bool = True,
) -> tuple[dict[str, dict], dict[str, dict]]:
    """Measure each distinct attention / FFN variant once, inside a whole model; name -> costs.

    A variant's time = (measured generation of a probe - `skeleton_cost`) / L, where the probe is the skeleton (every
    block a no-op) with the variant in every layer's attention or FFN slot: the subblock runs as in a child, its
    weights streaming from memory between the other layers' and the LM head's, with the layer dispatch and residual
    add it brings. Timing one module alone, even as L copies back to back, kept part of a small variant's weights in
    the CPU cache: children of small variants measured 5-12% slower than so predicted on SmolLM2.
    A difference below 0 (timing noise on a near-free variant) is recorded as 0.
    """
    config = skeleton.config
    L = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention: dict[str, dict] = {}
    ffn: dict[str, dict] = {}
    torch.manual_seed(0)
    items = [("attention", v) for v in attention_variants] + [("ffn", v) for v in ffn_variants]
    for kind, variant in tqdm(items, desc="measuring subblocks", disable=not progress):
        table = attention if kind == "attention" else ffn
        if variant.name in table:
            continue
        if variant.no_op:
            table[variant.name] = dict(NO_OP_COST)
            continue
        build = build_attention if kind == "attention" else build_ffn
        probe = _probe(skeleton, kind, variant, build).to(device=device, dtype=scenario.torch_dtype).eval()
        layer = probe.model.layers[0]
        module = layer.attn_block if kind == "attention" else layer.ffn_block
        record = _module_record(scenario, module, head_dim)
        cost = measure_generation(probe, scenario, device=device, warmup=warmup, iters=iters)
        del probe
        prefill = max(0.0, (cost["prefill_ms"] - skeleton_cost["prefill_ms"]) / L)
        decode = max(0.0, (cost["decode_ms"] - skeleton_cost["decode_ms"]) / L)
        record.update(prefill_ms=prefill, decode_ms=decode, runtime_ms=scenario.runtime_ms(prefill, decode))
        table[variant.name] = record
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
    warmup: int = 1,
    iters: int = 5,
    progress: bool = True,
) -> CostTable:
    """Measure the skeleton, every variant inside a probe model, the non-block part and the parent.

    skeleton = the parent with every block a no-op (measured): embeddings, LM head, per-forward work (positions,
    masks, cache, output objects) and the empty layers' dispatch -- the fixed runtime of every child.
    overhead_per_subblock = (measured parent - skeleton - sum of the parent's measured subblocks) / (2 L): what an
    attention and an FFN in the same layer cost beyond their probes (small; may be negative), so the parent is
    predicted exactly. The parent's (attention, FFN) variant names are read from `parent.config.parent_block_config()`.
    """
    config = parent.config
    parent = parent.to(device=device, dtype=scenario.torch_dtype).eval()
    skeleton_model = skeleton_of(parent)
    skeleton = measure_generation(skeleton_model, scenario, device=device, warmup=warmup, iters=iters)
    attention, ffn = measure_variants(
        skeleton_model, skeleton, attention_variants, ffn_variants, scenario, build_attention=build_attention,
        build_ffn=build_ffn, device=device, warmup=warmup, iters=iters, progress=progress)
    del skeleton_model
    nonblock = measure_nonblock(parent, scenario, device=device, warmup=warmup, iters=iters)
    measured = measure_generation(parent, scenario, device=device, warmup=warmup, iters=iters)

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
