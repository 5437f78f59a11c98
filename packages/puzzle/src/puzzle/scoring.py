"""Replace-1-block scoring: how much does one library candidate, alone in the parent, change the parent's output?

For every candidate (decoupled: one attention or one FFN variant at layer i; coupled: one whole block at layer i)
the candidate's modules are swapped into the otherwise intact parent, the held-out "score" batches are run, and

    kl             = mean over tokens of KL(p_parent || p_model)   (the search objective, nats/token)
    lm_loss        = mean next-token cross-entropy of the model
    top1_agreement = fraction of positions where the model's argmax equals the parent's

are recorded. The parent's log-probs are computed once per batch and reused for every candidate (kept on the CPU:
n_batches x batch x seq_len x vocab x 4 bytes). A candidate at layer i leaves layers 0..i-1 as the parent's, so it is
run from the parent's input to layer i only: the candidates are scored in layer order while one walk down the parent
carries that input along. SmolLM2-135M, 8K tokens, 2 CPU threads: 11 s for a layer-0 candidate (a whole forward), 5.6
s at layer 27 (the LM head and the KL over the 49K-token vocabulary stay); 241 candidates took 33 min, ~44 at the
layer-0 rate. Swapping a block is an attribute assignment on the parent's layer, undone in a `finally`
(`DeciLMForCausalLM.replace_block`), so the parent is never copied. Each candidate's result is one json file in
`cache_dir`, tagged with the caller's `cache_tag` (the stage's inputs hash); a rerun reads finished candidates
instead of scoring them again, so a killed scoring stage resumes where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from effinfer_core.atomic import write_atomic
from puzzle.block_config import AttentionConfig, BlockConfig, FFNConfig


@dataclass
class Candidate:
    """One replace-1-block experiment at `layer`: a new attention and/or FFN subblock (config, module; module None =
    no-op). The side left None keeps the parent's subblock. `kind` is "attention", "ffn" or "block"; `name` the
    variant id used in artifacts."""

    layer: int
    kind: str
    name: str
    attention: tuple[AttentionConfig, nn.Module | None] | None = None
    ffn: tuple[FFNConfig, nn.Module | None] | None = None

    @property
    def key(self) -> str:
        return "parent" if self.kind == "parent" else f"{self.layer:03d}-{self.kind}-{self.name}"

    def modules(self) -> list[nn.Module]:
        return [
            m for side in (self.attention, self.ffn) if side is not None for m in side[1:] if m is not None
        ]


@contextmanager
def swapped(model: nn.Module, candidate: Candidate):
    """Temporarily put the candidate's subblocks into the parent (`replace_block`); the parent's are restored after."""
    layer = model.model.layers[candidate.layer]
    saved = (layer.block_config, layer.attn_block, layer.ffn_block)
    attn_cfg, attn = candidate.attention or (saved[0].attention, saved[1])
    ffn_cfg, ffn = candidate.ffn or (saved[0].ffn, saved[2])
    try:
        model.replace_block(candidate.layer, BlockConfig(attn_cfg, ffn_cfg), attn, ffn)
        yield model
    finally:
        model.replace_block(candidate.layer, *saved)


def logits_of(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    """Float32 logits [B, T, V] of a causal LM (no KV cache)."""
    return model(input_ids=ids, use_cache=False).logits.float()


def compare_logits(parent_logp: torch.Tensor, logits: torch.Tensor, ids: torch.Tensor) -> dict[str, float]:
    """Sums over positions 0..T-2 (each has a next token): KL(parent || model), CE, agreement, correct, count."""
    p_logp = parent_logp[:, :-1].float()
    logp = F.log_softmax(logits[:, :-1].float(), dim=-1)
    target = ids[:, 1:]
    kl = (p_logp.exp() * (p_logp - logp)).sum(-1).clamp_min(0)  # KL >= 0; below is float rounding
    ce = -logp.gather(-1, target.unsqueeze(-1)).squeeze(-1)
    pred = logp.argmax(-1)
    return {
        "kl": kl.sum().item(),
        "lm_loss": ce.sum().item(),
        "top1_agreement": (pred == p_logp.argmax(-1)).sum().item(),
        "top1_accuracy": (pred == target).sum().item(),
        "tokens": target.numel(),
    }


def mean_metrics(sums: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """Token-weighted means of `compare_logits` sums over batches."""
    tokens = sum(s["tokens"] for s in sums)
    out = {k: sum(s[k] for s in sums) / tokens for k in sums[0] if k != "tokens"}
    out["tokens"] = tokens
    return out


@torch.inference_mode()
def parent_log_probs(
    model: nn.Module, batches: Sequence[torch.Tensor], device: torch.device
) -> list[torch.Tensor]:
    """The parent's log-probs for each batch, on the CPU (computed once, reused for every candidate)."""
    return [F.log_softmax(logits_of(model, ids.to(device)), dim=-1).cpu() for ids in batches]


@torch.inference_mode()
def score_candidate(
    model: nn.Module,
    candidate: Candidate,
    batches: Sequence[torch.Tensor],
    parent_logp: Sequence[torch.Tensor],
    device: torch.device,
    layer_inputs: Sequence[torch.Tensor],
) -> dict[str, float]:
    """Metrics of the parent with `candidate` swapped in; `layer_inputs` = the parent's input to its layer, per batch."""
    with swapped(model, candidate):
        sums = []
        for ids, lp, h in zip(batches, parent_logp, layer_inputs, strict=True):
            h = model.model.norm(model.model.forward_layers(h, candidate.layer))
            sums.append(compare_logits(lp.to(device), model.lm_head(h).float(), ids.to(device)))
    return mean_metrics(sums)


def score_candidates(
    model: nn.Module,
    candidates: Iterable[Candidate],
    batches: Sequence[torch.Tensor],
    *,
    device: torch.device,
    cache_dir: str | Path,
    cache_tag: str = "",
    progress: bool = True,
    on_scored: Callable[[Candidate, dict[str, float]], None] | None = None,
) -> dict[str, dict[str, float]]:
    """Score every candidate (cached per candidate in `cache_dir`); returns key -> metrics (see module docstring).

    The unmodified parent is scored too, under the key "parent" (KL 0, agreement 1, its own LM loss/accuracy).

    The model must be the parent in eval mode on `device`; candidate modules are moved to `device` when swapped in.
    """
    if not batches:
        raise ValueError("scoring needs at least one held-out batch; raise the score token budget")
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    candidates = [Candidate(0, "parent", "parent"), *candidates]
    results: dict[str, dict[str, float]] = {}
    todo = []
    for cand in candidates:
        path = cache_dir / f"{cand.key}.json"
        if path.exists():
            cached = json.loads(path.read_text())
            if cached.get("cache_tag") == cache_tag:
                results[cand.key] = cached["metrics"]
                continue
        todo.append(cand)
    if not todo:
        return results
    model.eval()
    parent_logp = parent_log_probs(model, batches, device)
    todo.sort(key=lambda c: c.layer)  # stable: "parent" stays first
    with torch.inference_mode():
        inputs, at = [model.model.embed_tokens(ids.to(device)) for ids in batches], 0
    for cand in tqdm(todo, desc="replace-1-block scoring", disable=not progress):
        if cand.layer > at:  # carry the parent's activations down to this candidate's layer
            with torch.inference_mode():
                inputs, at = [model.model.forward_layers(h, at, cand.layer) for h in inputs], cand.layer
        for module in cand.modules():
            module.to(device).eval()
        metrics = score_candidate(model, cand, batches, parent_logp, device, inputs)
        record = {
            "cache_tag": cache_tag,
            "layer": cand.layer,
            "kind": cand.kind,
            "name": cand.name,
            "metrics": metrics,
        }
        write_atomic(cache_dir / f"{cand.key}.json", json.dumps(record, indent=2, sort_keys=True))
        results[cand.key] = metrics
        if on_scored is not None:
            on_scored(cand, metrics)
    return results
