"""Realise chosen blocks into one heterogeneous child model.

The child is a deep copy of the parent (embeddings, final norm, LM head, RoPE) whose layer i gets copies of the
library's modules for `choices[i]` (the coupled-BLD pair when the library has one, else the decoupled subblocks).
The copies are cast to the parent's dtype/device, so training the child never changes the library. The child is
returned in eval mode with gradients enabled (ready for global distillation).
"""

from __future__ import annotations

import copy

from .block_config import BlockConfig
from .library import BlockLibrary
from .modeling_decilm import DeciLMForCausalLM


def realize(
    parent: DeciLMForCausalLM, choices: list[BlockConfig], library: BlockLibrary
) -> DeciLMForCausalLM:
    """Child whose layer i is `choices[i]`, weights from `library`."""
    n = parent.config.num_hidden_layers
    if len(choices) != n:
        raise ValueError(f"got {len(choices)} block choices for a parent with {n} layers; give one per layer")
    for i, block in enumerate(choices):
        if block.attention.name not in library.attention_names or block.ffn.name not in library.ffn_names:
            raise ValueError(
                f"layer {i}: block {block.name} is not in the library (attention variants "
                f"{library.attention_names}, ffn variants {library.ffn_names})"
            )
    param = next(parent.parameters())
    child = copy.deepcopy(parent)
    for i, block in enumerate(choices):
        attn, ffn = library.block(i, block)
        attn = copy.deepcopy(attn).to(device=param.device, dtype=param.dtype) if attn is not None else None
        ffn = copy.deepcopy(ffn).to(device=param.device, dtype=param.dtype) if ffn is not None else None
        child.replace_block(i, block, attn, ffn)
    return child.eval().requires_grad_(True)
