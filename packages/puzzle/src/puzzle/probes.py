"""Measuring a cost table (`build_cost_table`): probes, the skeleton and the non-block part, timed in whole
generations (`puzzle.timing.measure_generations`: prefill + greedy decode with the KV cache, medians; each probe
interleaved with the skeleton and the parent and rescaled to the parent's median, see `measure_blocks`):

    skeleton        the parent with every block a no-op: embeddings, LM head, per-forward work, empty layers --
                    the fixed runtime of every child
    a probe         the skeleton with one block in every layer; that block's time = (probe - skeleton) / L. The
                    parent's block is (parent - skeleton) / L; the all-no-op block is free.
    probes          "subblocks" (default): one probe per subblock variant with the other slot a no-op, and a block
                    = its two subblocks + an overhead per non-no-op subblock, (parent - skeleton - L * (parent
                    attention + parent FFN)) / 2L, what an attention and an FFN in one layer cost beyond their
                    probes (`additive_times`); "blocks": every block of the space in its own probe, |A| x |F| probes
                    instead of |A| + |F|, no additivity assumed. `puzzle cost-model-check` compares the two.
Every layer's block of the same config has the same shape, so each distinct block is measured once. The non-block
part (token embedding, final norm, LM head on the last position, argmax) is timed alone (`measure_nonblock`).
Why probes and not one module timed alone: alone, even as L copies back to back, part of a small variant's weights
stayed in the CPU cache, and children made of small variants ran 5-12% slower than predicted (SmolLM2, 2-core Xeon).
"""

from __future__ import annotations

import copy
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.yardstick import count_params
from puzzle.costs import CostTable, Scenario, block_name, kv_cache_bytes
from puzzle.timing import measure_generations, median_ms

if TYPE_CHECKING:
    from puzzle.modeling_decilm import AttentionBlock, DeciLMForCausalLM


def _to(model: DeciLMForCausalLM, device: torch.device, scenario: Scenario) -> nn.Module:
    """`model` moved to `device` and cast to the scenario's dtype, in place (nn.Module.to returns the module itself)."""
    # the cast: transformers wraps `to` with functools.wraps, which its stubs turn into an unbound call
    return cast(nn.Module, model).to(device=device, dtype=scenario.torch_dtype)


def _weights_bytes(module: nn.Module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def _record(scenario: Scenario, prefill_ms: float, decode_ms: float, params: int, memory_bytes: int) -> dict:
    return {
        "prefill_ms": prefill_ms,
        "decode_ms": decode_ms,
        "runtime_ms": scenario.runtime_ms(prefill_ms, decode_ms),
        "params": params,
        "memory_mib": memory_bytes / 2**20,
    }


@torch.inference_mode()
def measure_nonblock(
    model: DeciLMForCausalLM, scenario: Scenario, *, device: torch.device, warmup: int = 3, iters: int = 10
) -> dict:
    """Embedding lookup + final norm + LM head on the last position + greedy argmax, for prefill and one decode step.

    Parameters/memory count the embedding, final norm and LM head once each (a tied LM head shares the embedding).
    """
    _to(model, device, scenario).eval()
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


def skeleton_of(model: DeciLMForCausalLM) -> DeciLMForCausalLM:
    """A copy of `model` with every block a no-op (the part of the runtime that every child pays)."""
    from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig

    skeleton = copy.deepcopy(model)
    empty = BlockConfig(AttentionConfig(no_op=True), FFNConfig(no_op=True))
    for i in range(skeleton.config.num_hidden_layers):
        skeleton.replace_block(i, empty, None, None)
    return skeleton


def with_blocks(
    model: DeciLMForCausalLM,
    blocks: Sequence[Any],
    build_attention: Callable[..., nn.Module | None],
    build_ffn: Callable[..., nn.Module | None],
) -> DeciLMForCausalLM:
    """A copy of `model` with blocks[i] (a BlockConfig) in layer i, every one built anew (fresh weights): a child's
    architecture for timing before it is trained, as a dense generation's runtime does not depend on the weights."""
    out = copy.deepcopy(model)
    config = out.config
    for i, block in enumerate(blocks):
        out.replace_block(i, block, build_attention(config, i, block.attention), build_ffn(config, block.ffn))
    return out


def _probe(
    skeleton: DeciLMForCausalLM,
    block: Any,
    build_attention: Callable[..., nn.Module | None],
    build_ffn: Callable[..., nn.Module | None],
) -> DeciLMForCausalLM:
    """The skeleton with `block` (a BlockConfig) in every layer, each attention with its own layer index."""
    return with_blocks(skeleton, [block] * skeleton.config.num_hidden_layers, build_attention, build_ffn)


def _size(scenario: Scenario, module: nn.Module | None, head_dim: int) -> dict[str, float]:
    """Params and memory (weights + KV cache when the module keeps one) of one subblock; a no-op (None) is free."""
    if module is None:
        return {"params": 0, "memory_mib": 0.0}
    has_cache = getattr(module, "has_kv_cache", False)
    # a subblock that keeps a KV cache is a GQA AttentionBlock
    n_kv = cast("AttentionBlock", module).self_attn.num_key_value_heads if has_cache else 0
    kv = kv_cache_bytes(scenario, n_kv, head_dim) if has_cache else 0
    return {"params": count_params(module), "memory_mib": (_weights_bytes(module) + kv) / 2**20}


PHASES = ("prefill_ms", "decode_ms")
PROBES = ("subblocks", "blocks")  # what the measure stage puts in its probes (config measure.probes)


def measure_blocks(
    parent: DeciLMForCausalLM,
    attention_variants: Sequence[Any],
    ffn_variants: Sequence[Any],
    scenario: Scenario,
    *,
    build_attention: Callable[[Any, int, Any], nn.Module | None],
    build_ffn: Callable[[Any, Any], nn.Module | None],
    device: torch.device,
    probes: str = "subblocks",
    warmup: int = 1,
    iters: int = 5,
    progress: bool = True,
) -> tuple[dict[str, dict], dict[str, float], dict[str, float], dict[str, dict]]:
    """Times of every (attention, FFN) block of the space: (block times, skeleton, parent, probe times).

    A probe is the skeleton (every block a no-op) with one block in every layer; that block's time = (probe -
    skeleton) / L: it runs as in a child, its weights streaming from memory between the other layers' and the LM
    head's, with the layer dispatch and residual adds it brings. The parent's own block is (parent - skeleton) / L;
    the all-no-op block is free.
    probes="subblocks": one probe per subblock variant, with the other slot a no-op (|A| + |F| probes), and a block's
    time is its subblocks' sum plus a per-subblock overhead (`additive_times`). probes="blocks": every block of the
    space in its own probe (|A| x |F| probes), no additivity assumed.
    Each probe is timed interleaved with the skeleton and the parent, and scaled by the parent's median over all
    probes / its time in that run, so a drift of the machine's speed between probes cancels. A difference below 0
    (noise on a near-free block) is recorded as 0.
    """
    from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig

    if probes not in PROBES:
        raise ValueError(f"probes must be one of {PROBES}, got {probes!r}")
    config = parent.config
    L = config.num_hidden_layers
    pa = config.parent_block_config()
    _to(parent, device, scenario).eval()
    skeleton = skeleton_of(parent)
    space = {b.name: b for b in (BlockConfig(a, f) for a in attention_variants for f in ffn_variants)}
    if probes == "blocks":
        probed = space
    else:
        no_attention, no_ffn = AttentionConfig(no_op=True), FFNConfig(no_op=True)
        probed = {
            b.name: b
            for b in [BlockConfig(a, no_ffn) for a in attention_variants]
            + [BlockConfig(no_attention, f) for f in ffn_variants]
        }
    runs: dict[str, dict[str, dict]] = {}
    torch.manual_seed(0)
    for name, block in tqdm(probed.items(), desc=f"measuring {probes}", disable=not progress):
        if block == pa or (block.attention.no_op and block.ffn.no_op):
            continue
        probe = _probe(skeleton, block, build_attention, build_ffn)
        runs[name] = measure_generations(
            {"skeleton": skeleton, "probe": probe, "parent": parent},
            scenario,
            device=device,
            warmup=warmup,
            iters=iters,
        )
        del probe
    if not runs:  # only the parent's block and no-ops: time the skeleton and the parent once
        runs[""] = measure_generations(
            {"skeleton": skeleton, "parent": parent}, scenario, device=device, warmup=warmup, iters=iters
        )
    ref = {k: statistics.median(r["parent"][k] for r in runs.values()) for k in PHASES}

    def scaled(model: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            k: statistics.median(r[model][k] * ref[k] / r["parent"][k] for r in runs.values()) for k in PHASES
        }
        out["runtime_ms"] = scenario.runtime_ms(out["prefill_ms"], out["decode_ms"])
        out["tokens_per_s"] = scenario.tokens_per_s(out["runtime_ms"])
        return out

    skeleton_ms, parent_ms = scaled("skeleton"), scaled("parent")
    # every whole generation of the parent, probe after probe: the measure stage stops when they disagree
    parent_ms["rounds_ms"] = [t for r in runs.values() for t in r["parent"]["rounds_ms"]]
    measured: dict[str, dict[str, float]] = {}
    for name, block in probed.items():
        if block.attention.no_op and block.ffn.no_op:
            t = {k: 0.0 for k in PHASES}
        elif block == pa:
            t = {k: max(0.0, (parent_ms[k] - skeleton_ms[k]) / L) for k in PHASES}
        else:
            r = runs[name]
            t = {
                k: max(0.0, (r["probe"][k] - r["skeleton"][k]) * ref[k] / r["parent"][k] / L) for k in PHASES
            }
        t["runtime_ms"] = scenario.runtime_ms(t["prefill_ms"], t["decode_ms"])
        measured[name] = t
    if probes == "blocks":
        return measured, skeleton_ms, parent_ms, measured
    times = additive_times(measured, list(space.values()), pa, parent_ms, skeleton_ms, L, scenario)
    return times, skeleton_ms, parent_ms, measured


def additive_times(
    lone: Mapping[str, dict],
    blocks: Sequence[Any],
    parent_block: Any,
    parent_ms: Mapping[str, float],
    skeleton_ms: Mapping[str, float],
    L: int,
    scenario: Scenario,
) -> dict[str, dict]:
    """Block times from lone-subblock probe times (`lone`: "attention+no_op" and "no_op+ffn" entries).

    A block = its attention alone + its FFN alone + an overhead per non-no-op subblock, the same for all:
    (parent - skeleton - L * (parent attention + parent FFN)) / 2L, what an attention and an FFN in one layer cost
    beyond their probes, so that the parent is predicted exactly (unless noise makes a block's sum negative: then
    it is 0, as in `measure_blocks`).
    """

    def alone(attention: str, ffn: str, k: str) -> float:
        return 0.0 if "no_op" == attention == ffn else lone[block_name(attention, ffn)][k]

    pa, pf = parent_block.attention.name, parent_block.ffn.name
    over = {
        k: (parent_ms[k] - skeleton_ms[k] - L * (alone(pa, "no_op", k) + alone("no_op", pf, k))) / (2 * L)
        for k in PHASES
    }
    times = {}
    for b in blocks:
        a, f = b.attention.name, b.ffn.name
        # at least 0: on a busy machine the overhead came out so far below 0 that children were predicted to run
        # in negative time
        t = {
            k: max(
                0.0, alone(a, "no_op", k) + alone("no_op", f, k) + over[k] * ((a != "no_op") + (f != "no_op"))
            )
            for k in PHASES
        }
        t["runtime_ms"] = scenario.runtime_ms(t["prefill_ms"], t["decode_ms"])
        times[b.name] = t
    return times


def build_cost_table(
    parent: DeciLMForCausalLM,
    attention_variants: Sequence[Any],
    ffn_variants: Sequence[Any],
    scenario: Scenario,
    *,
    build_attention: Callable[[Any, int, Any], nn.Module | None],
    build_ffn: Callable[[Any, Any], nn.Module | None],
    device: torch.device,
    probes: str = "subblocks",
    warmup: int = 1,
    iters: int = 5,
    progress: bool = True,
) -> CostTable:
    """Every block's time (`measure_blocks`), the skeleton, the parent, the non-block part, and each subblock's params
    and memory (a block's are the sums of its two subblocks').

    calibration: the parent and the skeleton as measured, the probes' own times ("probe_times"), per block with
    both subblocks whose lone probes were taken "additivity" = its time / (its attention alone + its FFN alone)
    (1 = additive; with probes="subblocks" it only shows the overhead), and "sum_of_parts_over_measured" = (skeleton
    + L x the parent's two lone subblocks) / the parent, where those probes were taken.
    """
    config = parent.config
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    times, skeleton, measured, probed = measure_blocks(
        parent,
        attention_variants,
        ffn_variants,
        scenario,
        build_attention=build_attention,
        build_ffn=build_ffn,
        device=device,
        probes=probes,
        warmup=warmup,
        iters=iters,
        progress=progress,
    )
    nonblock = measure_nonblock(parent, scenario, device=device, warmup=warmup, iters=iters)
    attention = {v.name: _size(scenario, build_attention(config, 0, v), head_dim) for v in attention_variants}
    ffn = {v.name: _size(scenario, build_ffn(config, v), head_dim) for v in ffn_variants}

    def lone_sum(a: str, f: str) -> float | None:
        """Runtime of attention `a` alone + FFN `f` alone, where both lone probes were taken."""
        attn, ffn = probed.get(block_name(a, "no_op")), probed.get(block_name("no_op", f))
        return None if attn is None or ffn is None else attn["runtime_ms"] + ffn["runtime_ms"]

    blocks, additivity = {}, {}
    for name, t in times.items():
        a, f = name.split("+")
        blocks[name] = {**t, **{k: attention[a][k] + ffn[f][k] for k in ("params", "memory_mib")}}
        alone = lone_sum(a, f)
        if "no_op" not in (a, f) and alone:
            additivity[name] = t["runtime_ms"] / alone
    calibration: dict[str, Any] = {
        "probes": probes,
        "parent_measured": measured,
        "skeleton_measured": skeleton,
        "probe_times": probed,
        "additivity": additivity,
    }
    pa = config.parent_block_config()
    alone = lone_sum(pa.attention.name, pa.ffn.name)
    if alone is not None:  # the parent as its lone subblocks add up, before any overhead
        parts = skeleton["runtime_ms"] + config.num_hidden_layers * alone
        calibration["sum_of_parts_over_measured"] = parts / measured["runtime_ms"]
    return CostTable(scenario, str(device), attention, ffn, blocks, nonblock, skeleton, calibration)
