"""score: replace-1-block scores of every candidate and ShortGPT's block influence of the parent ->
score/blocks/*.json, score/scores.json, score/block_influence.json."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from puzzle.block_config import BlockConfig
from puzzle.scoring import Candidate, score_candidates
from puzzle.stages.library import load_library

if TYPE_CHECKING:
    from puzzle.library import BlockLibrary
    from puzzle.pipeline import Pipeline


def run(pipe: Pipeline, h: str) -> dict[str, Any]:
    from puzzle.baselines import block_influence

    parent, _ = pipe.parent()
    batches = pipe.datamodule().heldout_batches("score", pipe.config["score"]["tokens"])
    scores = score_candidates(
        parent,
        candidates(pipe, load_library(pipe)),
        batches,
        device=pipe.device,
        cache_dir=pipe.run.stage_dir("score") / "blocks",
        cache_tag=h,
        progress=pipe.progress,
    )
    pipe.run.write_json("score/scores.json", scores)
    # ShortGPT's block influence needs the parent's hidden states on the same batches; the last entry of HF's
    # hidden_states is after the final norm, so the last layer's raw output is taken from a hook instead.
    # per layer, summed over batches weighted by their tokens
    bi, tokens, last = np.zeros(parent.config.num_hidden_layers), 0, []
    hook = parent.model.layers[-1].register_forward_hook(lambda module, args, out: last.append(out))
    try:
        with torch.inference_mode():
            for ids in batches:
                out = parent(input_ids=ids.to(pipe.device), use_cache=False, output_hidden_states=True)
                bi = bi + block_influence([*out.hidden_states[:-1], last.pop()]) * ids.numel()
                tokens += ids.numel()
    finally:
        hook.remove()
    pipe.run.write_json("score/block_influence.json", (bi / tokens).tolist())
    return {"candidates": len(scores), "score_tokens": tokens}


def candidates(pipe: Pipeline, library: BlockLibrary) -> list[Candidate]:
    """Replace-1-block candidates: per layer, every non-parent subblock (decoupled) or block (coupled)."""
    pa = pipe.parent_block()
    attention, ffn = pipe.attention_variants(), pipe.ffn_variants()
    out = []
    for i in range(pipe.parent_config.num_hidden_layers):
        if pipe.config["bld"]["mode"] == "decoupled":
            out += [
                Candidate(i, "attention", a.name, attention=(a, library.attention_block(i, a.name)))
                for a in attention
                if a != pa.attention
            ]
            out += [
                Candidate(i, "ffn", f.name, ffn=(f, library.ffn_block(i, f.name))) for f in ffn if f != pa.ffn
            ]
            continue
        for a in attention:
            for f in ffn:
                block = BlockConfig(a, f)
                if block != pa:
                    attn, ffn_block = library.block(i, block)
                    out.append(Candidate(i, "block", block.name, attention=(a, attn), ffn=(f, ffn_block)))
    return out
