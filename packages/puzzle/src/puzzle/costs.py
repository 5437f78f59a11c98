"""Measured costs of every subblock variant for one deployment scenario (never analytic).

Scenario = (batch B, prefill length P, decode length D, dtype). Every time below is a measured whole generation
(`measure_generations`: prefill + greedy decode with the KV cache, through `benchmarks.yardstick.time_fn`, medians;
each probe interleaved with the skeleton and the parent and rescaled to the parent's median, see `measure_variants`):

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
from collections.abc import Callable, Mapping, Sequence
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
def measure_generations(models: Mapping[str, nn.Module], scenario: Scenario, *, device: torch.device,
                        warmup: int = 1, iters: int = 5) -> dict[str, dict]:
    """Measured prefill and full generation of several models: runtime_ms, prefill_ms, decode_ms (per token), tokens/s.

    Interleaved: each of the `iters` rounds times every model once (medians over rounds), so a drift of the
    machine's speed hits all models alike -- on the shared 2-core VM this repo was built on, the same parent measured
    23.5 to 31 tokens/s in fresh processes within one hour. Models are moved to `device` and cast to the scenario
    dtype in place.
    """
    gens = {name: GreedyGenerator(m.to(device=device, dtype=scenario.torch_dtype).eval(), scenario, device)
            for name, m in models.items()}
    for gen in gens.values():
        for _ in range(max(1, warmup)):  # the first generation pays one-off costs (allocations, kernel choice)
            gen()
    prefill: dict[str, list[float]] = {name: [] for name in gens}
    total: dict[str, list[float]] = {name: [] for name in gens}
    for _ in range(iters):
        for name, gen in gens.items():
            prefill[name] += time_fn(gen.prefill, device=device, warmup=0, iters=1)
            total[name] += time_fn(gen, device=device, warmup=0, iters=1)
    out = {}
    for name in gens:
        p_ms, t_ms = 1000.0 * statistics.median(prefill[name]), 1000.0 * statistics.median(total[name])
        out[name] = {"prefill_ms": p_ms, "decode_ms": (t_ms - p_ms) / scenario.decode, "runtime_ms": t_ms,
                     "tokens_per_s": scenario.tokens_per_s(t_ms)}
    return out


def measure_generation(model: nn.Module, scenario: Scenario, *, device: torch.device, warmup: int = 1,
                       iters: int = 3) -> dict:
    """`measure_generations` of one model."""
    return measure_generations({"model": model}, scenario, device=device, warmup=warmup, iters=iters)["model"]


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


PHASES = ("prefill_ms", "decode_ms")


def measure_variants(
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
) -> tuple[dict[str, dict], dict[str, dict], dict[str, float], dict[str, float]]:
    """Each distinct attention / FFN variant timed inside a probe model: (attention, ffn, skeleton, parent) costs.

    A variant's time = (probe - skeleton) / L, where the probe is the skeleton (every block a no-op) with the variant
    in every layer's attention or FFN slot: the subblock runs as in a child, its weights streaming from memory between
    the other layers' and the LM head's, with the layer dispatch and residual add it brings. Timing one module alone,
    even as L copies back to back, kept part of a small variant's weights in the CPU cache: children of small variants
    then ran 5-12% slower than predicted (SmolLM2). Each probe is timed interleaved with the skeleton and the parent,
    and scaled by the parent's median over all probes / its time in that run, so a drift of the machine's speed
    between probes cancels. A difference below 0 (timing noise on a near-free variant) is recorded as 0.
    """
    config = parent.config
    L = config.num_hidden_layers
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    parent = parent.to(device=device, dtype=scenario.torch_dtype).eval()
    skeleton = skeleton_of(parent)
    tables: dict[str, dict[str, dict]] = {"attention": {}, "ffn": {}}
    runs: dict[tuple[str, str], dict[str, dict]] = {}
    torch.manual_seed(0)
    items = [("attention", v) for v in attention_variants] + [("ffn", v) for v in ffn_variants]
    for kind, variant in tqdm(items, desc="measuring subblocks", disable=not progress):
        if variant.name in tables[kind]:
            continue
        if variant.no_op:
            tables[kind][variant.name] = dict(NO_OP_COST)
            continue
        probe = _probe(skeleton, kind, variant, build_attention if kind == "attention" else build_ffn)
        layer = probe.model.layers[0]
        tables[kind][variant.name] = _module_record(
            scenario, layer.attn_block if kind == "attention" else layer.ffn_block, head_dim)
        runs[kind, variant.name] = measure_generations({"skeleton": skeleton, "probe": probe, "parent": parent},
                                                       scenario, device=device, warmup=warmup, iters=iters)
        del probe
    if not runs:  # only no-ops: time the skeleton and the parent once
        runs["", ""] = measure_generations({"skeleton": skeleton, "parent": parent}, scenario, device=device,
                                           warmup=warmup, iters=iters)
    ref = {k: statistics.median(r["parent"][k] for r in runs.values()) for k in PHASES}
    for (kind, name), r in runs.items():
        if kind:
            record = tables[kind][name]
            for k in PHASES:
                record[k] = max(0.0, (r["probe"][k] - r["skeleton"][k]) * ref[k] / r["parent"][k] / L)
            record["runtime_ms"] = scenario.runtime_ms(record["prefill_ms"], record["decode_ms"])

    def scaled(model: str) -> dict[str, float]:
        out = {k: statistics.median(r[model][k] * ref[k] / r["parent"][k] for r in runs.values()) for k in PHASES}
        out["runtime_ms"] = scenario.runtime_ms(out["prefill_ms"], out["decode_ms"])
        out["tokens_per_s"] = scenario.tokens_per_s(out["runtime_ms"])
        return out

    return tables["attention"], tables["ffn"], scaled("skeleton"), scaled("parent")


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
    """Every variant timed in its probe (`measure_variants`), the skeleton, the parent and the non-block part.

    overhead_per_subblock = (measured parent - skeleton - sum of the parent's subblocks) / (2 L): what an attention
    and an FFN in the same layer cost beyond their probes (small; may be negative), so the parent is predicted
    exactly. The parent's (attention, FFN) variant names are read from `parent.config.parent_block_config()`.
    """
    config = parent.config
    attention, ffn, skeleton, measured = measure_variants(
        parent, attention_variants, ffn_variants, scenario, build_attention=build_attention, build_ffn=build_ffn,
        device=device, warmup=warmup, iters=iters, progress=progress)
    nonblock = measure_nonblock(parent, scenario, device=device, warmup=warmup, iters=iters)

    pa = config.parent_block_config()
    L = config.num_hidden_layers
    zero = {"prefill_ms": 0.0, "decode_ms": 0.0, "runtime_ms": 0.0}
    table = CostTable(scenario, str(device), attention, ffn, nonblock, skeleton, zero, {})
    parts = table.predict([(pa.attention.name, pa.ffn.name)] * L)
    over = {k: (measured[k] - parts[k]) / (2 * L) for k in PHASES}
    over["runtime_ms"] = scenario.runtime_ms(over["prefill_ms"], over["decode_ms"])
    table.overhead_per_subblock = over
    table.calibration = {"parent_measured": measured, "skeleton_measured": skeleton,
                         "parent_sum_of_parts": parts,
                         "sum_of_parts_over_measured": parts["runtime_ms"] / measured["runtime_ms"]}
    return table
