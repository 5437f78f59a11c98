"""Whole-model timing: a prefill + greedy decode with the KV cache (`GreedyGenerator`), timed for several models
interleaved round by round (`measure_generations`), and one model's runtime relative to another's from the same
rounds (`runtime_ratio`). Times come from `benchmarks.yardstick.time_fn`; medians throughout.
"""

from __future__ import annotations

import inspect
import statistics
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import nn

from benchmarks.yardstick import time_fn
from puzzle.costs import Scenario

if TYPE_CHECKING:
    from transformers import PretrainedConfig


def median_ms(fn: Callable[[], Any], device: torch.device, warmup: int, iters: int) -> float:
    return 1000.0 * statistics.median(time_fn(fn, device=device, warmup=warmup, iters=iters))


def _accepts(fn: Callable, name: str) -> bool:
    params = inspect.signature(fn).parameters
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


class GreedyGenerator:
    """Prefill + `decode` greedy steps with the model's KV cache: the whole-model measurement of a scenario."""

    def __init__(self, model: nn.Module, scenario: Scenario, device: torch.device, seed: int = 0):
        self.model, self.scenario, self.device = model, scenario, device
        # an HF causal LM; nn.Module's stubs would read its config as a submodule
        vocab: int = cast("PretrainedConfig", model.config).vocab_size
        gen = torch.Generator().manual_seed(seed)
        self.prompt = torch.randint(0, vocab, (scenario.batch, scenario.prefill), generator=gen).to(device)
        forward = model.forward
        # LM head on the last position only, as generate does
        self.keep_last = _accepts(forward, "logits_to_keep")
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
def measure_generations(
    models: Mapping[str, nn.Module],
    scenario: Scenario,
    *,
    device: torch.device,
    warmup: int = 1,
    iters: int = 5,
) -> dict[str, dict]:
    """Measured prefill and full generation of several models: runtime_ms, prefill_ms, decode_ms (per token), tokens/s
    (medians over rounds), and rounds_ms (each round's full generation, to compare two models round by round).

    Interleaved: each of the `iters` rounds times every model once (medians over rounds), so a drift of the
    machine's speed hits all models alike -- on the shared 2-core VM this repo was built on, the same parent measured
    23.5 to 31 tokens/s in fresh processes within one hour. Models are moved to `device` and cast to the scenario
    dtype in place.
    """
    gens = {
        name: GreedyGenerator(m.to(device=device, dtype=scenario.torch_dtype).eval(), scenario, device)
        for name, m in models.items()
    }
    for gen in gens.values():
        for _ in range(
            max(1, warmup)
        ):  # the first generation pays one-off costs (allocations, kernel choice)
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
        out[name] = {
            "prefill_ms": p_ms,
            "decode_ms": (t_ms - p_ms) / scenario.decode,
            "runtime_ms": t_ms,
            "tokens_per_s": scenario.tokens_per_s(t_ms),
            "rounds_ms": [1000.0 * t for t in total[name]],
        }
    return out


def runtime_ratio(measured: Mapping[str, Mapping[str, Any]], name: str, reference: str) -> float:
    """`name`'s runtime over `reference`'s, both from one `measure_generations`: the median of the round-by-round
    ratios, so that a drift of the machine's speed between rounds cancels (on a shared VM the same model measured up
    to 2x apart within an hour)."""
    return statistics.median(
        a / b for a, b in zip(measured[name]["rounds_ms"], measured[reference]["rounds_ms"], strict=True)
    )


def measure_generation(
    model: nn.Module, scenario: Scenario, *, device: torch.device, warmup: int = 1, iters: int = 3
) -> dict:
    """`measure_generations` of one model."""
    return measure_generations({"model": model}, scenario, device=device, warmup=warmup, iters=iters)["model"]


class MachineBusyError(RuntimeError):
    """Timings taken now would be wrong: other processes hold the cores, or repeated timings disagree."""


def timing_spread(rounds_ms: Sequence[float]) -> float:
    """Upper quartile over lower quartile of repeated timings of one model: about 1.05 on a quiet machine; a
    machine whose speed jumps while it measures gives far more."""
    q25, _, q75 = statistics.quantiles(rounds_ms, n=4, method="inclusive")
    return q75 / q25 if q25 > 0 else float("inf")
