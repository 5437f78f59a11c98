"""Heterogeneous Llama ("DeciLM" / Nemotron-NAS): every layer follows its own `BlockConfig`.

Self-contained for `trust_remote_code`: imports torch, transformers and the two sibling files that export copies
beside it (configuration_decilm.py, block_config.py).

Layer i = h + attn_block(h) then h + ffn_block(h), where each subblock owns its RMSNorm and is one of
  attention: GQA with any number of KV heads (SDPA, Llama RoPE) | one hidden x hidden linear map | nothing (no_op)
  FFN:       SwiGLU of any width                                  | one hidden x hidden linear map | nothing (no_op)

Parameter names follow the Nemotron-NAS / Llama checkpoint layout that vLLM, TensorRT-LLM and llama.cpp read
(`model.layers.i.input_layernorm`, `.self_attn.{q,k,v,o}_proj` or `.self_attn.linear_attn`,
`.post_attention_layernorm`, `.mlp.{gate,up,down}_proj` or `.mlp.linear_mlp`). To get those names while still
exposing each subblock as one module, a decoder layer registers the subblock's children directly and keeps the
subblock itself as a plain (unregistered) attribute `attn_block` / `ffn_block` that shares the same modules.

KV cache: only GQA layers write to the cache, under a compact index (the k-th GQA layer uses cache layer k), so
a transformers `DynamicCache` holds exactly one entry per attention layer and `get_seq_length()` is always
the length seen by a real attention layer.

Deviation from the written contract: `attn_block(...)` takes no `cache_position` (transformers 5.23 removed it;
DynamicCache does not need it) but an optional `cache_idx` (the compact cache slot; defaults to the layer index).
"""

from collections.abc import Sequence
from typing import cast

import torch
import torch.nn.functional as F
from torch import nn
from transformers import DynamicCache, GenerationMixin, PreTrainedModel
from transformers.activations import ACT2FN
from transformers.cache_utils import Cache
from transformers.modeling_outputs import BaseModelOutputWithPast, CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaRMSNorm, LlamaRotaryEmbedding, apply_rotary_pos_emb

from .block_config import AttentionConfig, BlockConfig, FFNConfig
from .configuration_decilm import DeciLMConfig

DeciLMRMSNorm = LlamaRMSNorm
DeciLMRotaryEmbedding = LlamaRotaryEmbedding


def attention_mask_for(
    q_len: int, kv_len: int, device: torch.device, padding_mask: torch.Tensor | None = None
) -> torch.Tensor | None:
    """Boolean SDPA mask [B|1, 1, q, kv] (True = attend), or None when `is_causal` / decode needs no mask.

    Queries are the last q_len positions of the kv_len keys. `padding_mask` is the usual [B, kv] 0/1 mask.
    """
    past = kv_len - q_len
    if padding_mask is None and (past == 0 or q_len == 1):
        return None
    q_pos = torch.arange(past, kv_len, device=device)[:, None]
    k_pos = torch.arange(kv_len, device=device)[None, :]
    mask = k_pos <= q_pos
    if padding_mask is None:
        return mask[None, None]
    keep = padding_mask[:, None, None, -kv_len:].bool()
    # A padded query would see no key at all and SDPA would return NaN that leaks into later layers;
    # letting every query see itself keeps padded rows finite (their outputs are ignored anyway).
    return (mask & keep) | (k_pos == q_pos)


class DeciLMAttention(nn.Module):
    """GQA self-attention with `num_key_value_heads` KV heads (query heads fixed by the config)."""

    def __init__(self, config: DeciLMConfig, num_key_value_heads: int, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = config.head_dim
        self.num_heads = config.num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        bias = config.attention_bias
        self.q_proj = nn.Linear(config.hidden_size, self.num_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(config.hidden_size, num_key_value_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(config.hidden_size, num_key_value_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.num_heads * self.head_dim, config.hidden_size, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache_idx: int | None = None,
    ) -> torch.Tensor:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, T, self.num_key_value_heads, self.head_dim).transpose(1, 2)
        cos, sin = position_embeddings
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        if past_key_values is not None:
            k, v = past_key_values.update(k, v, self.layer_idx if cache_idx is None else cache_idx)
        mask = attention_mask if attention_mask is not None else attention_mask_for(T, k.shape[2], x.device)
        y = F.scaled_dot_product_attention(
            q,
            k,
            v,
            attn_mask=mask,
            is_causal=mask is None and T > 1,
            enable_gqa=self.num_key_value_heads != self.num_heads,
        )
        return self.o_proj(y.transpose(1, 2).reshape(B, T, -1))


class DeciLMLinearAttention(nn.Module):
    """`replace_with_linear` attention: one hidden x hidden matrix, no token mixing, no cache."""

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__()
        self.linear_attn = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_attn(x)


class DeciLMMLP(nn.Module):
    """SwiGLU FFN: down(act(gate(x)) * up(x))."""

    def __init__(self, config: DeciLMConfig, intermediate_size: int) -> None:
        super().__init__()
        bias = config.mlp_bias
        self.gate_proj = nn.Linear(config.hidden_size, intermediate_size, bias=bias)
        self.up_proj = nn.Linear(config.hidden_size, intermediate_size, bias=bias)
        self.down_proj = nn.Linear(intermediate_size, config.hidden_size, bias=bias)
        self.act_fn = ACT2FN[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act_fn(self.gate_proj(x)) * self.up_proj(x))


class DeciLMLinearMLP(nn.Module):
    """`replace_with_linear` FFN: one hidden x hidden matrix."""

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__()
        self.linear_mlp = nn.Linear(config.hidden_size, config.hidden_size, bias=config.mlp_bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_mlp(x)


class AttentionBlock(nn.Module):
    """Attention subblock = RMSNorm + GQA attention; returns the residual delta."""

    has_kv_cache = True

    def __init__(self, config: DeciLMConfig, num_key_value_heads: int, layer_idx: int) -> None:
        super().__init__()
        self.input_layernorm = DeciLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = DeciLMAttention(config, num_key_value_heads, layer_idx)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache_idx: int | None = None,
    ) -> torch.Tensor:
        return self.self_attn(
            self.input_layernorm(hidden_states),
            position_embeddings,
            attention_mask,
            past_key_values,
            cache_idx,
        )


class LinearAttentionBlock(nn.Module):
    """Attention subblock replaced by RMSNorm + one linear map (same call signature, ignores positions/cache)."""

    has_kv_cache = False

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__()
        self.input_layernorm = DeciLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = DeciLMLinearAttention(config)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache_idx: int | None = None,
    ) -> torch.Tensor:
        return self.self_attn(self.input_layernorm(hidden_states))


class FFNBlock(nn.Module):
    """FFN subblock = RMSNorm + SwiGLU or linear map; returns the residual delta."""

    def __init__(self, config: DeciLMConfig, mlp: nn.Module) -> None:
        super().__init__()
        self.post_attention_layernorm = DeciLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.mlp = mlp

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.post_attention_layernorm(hidden_states))


def build_attention_block(
    config: DeciLMConfig, layer_idx: int, attention: AttentionConfig
) -> nn.Module | None:
    """Fresh (randomly initialised) attention subblock for `attention`; None for no_op."""
    if attention.no_op:
        return None
    if attention.replace_with_linear:
        return LinearAttentionBlock(config)
    group = attention.n_heads_in_group
    if not group or config.num_attention_heads % group:
        raise ValueError(f"n_heads_in_group={group} does not divide {config.num_attention_heads} query heads")
    return AttentionBlock(config, config.num_attention_heads // group, layer_idx)


def build_ffn_block(config: DeciLMConfig, ffn: FFNConfig) -> FFNBlock | None:
    """Fresh FFN subblock for `ffn`; None for no_op."""
    if ffn.no_op:
        return None
    if ffn.replace_with_linear:
        return FFNBlock(config, DeciLMLinearMLP(config))
    return FFNBlock(config, DeciLMMLP(config, ffn.resolved_intermediate_size(config.hidden_size)))


class DeciLMDecoderLayer(nn.Module):
    """h = h + attn_block(h); h = h + ffn_block(h). A None subblock is a no-op."""

    # plain attributes (see `set_blocks`), declared so that they do not read as nn.Module.__getattr__'s union
    block_config: BlockConfig
    attn_block: nn.Module | None
    ffn_block: nn.Module | None

    def __init__(self, config: DeciLMConfig, layer_idx: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        block = config.blocks[layer_idx]
        self.set_blocks(
            block,
            build_attention_block(config, layer_idx, block.attention),
            build_ffn_block(config, block.ffn),
        )

    def set_blocks(
        self, block_config: BlockConfig, attn_block: nn.Module | None, ffn_block: nn.Module | None
    ) -> None:
        """Install subblocks. Their children are registered under the checkpoint names (see module docstring)."""
        self.block_config = block_config
        self.__dict__["attn_block"] = attn_block
        self.__dict__["ffn_block"] = ffn_block
        self.input_layernorm = attn_block.input_layernorm if attn_block is not None else None
        self.self_attn = attn_block.self_attn if attn_block is not None else None
        self.post_attention_layernorm = ffn_block.post_attention_layernorm if ffn_block is not None else None
        self.mlp = ffn_block.mlp if ffn_block is not None else None

    @property
    def has_kv_cache(self) -> bool:
        return self.attn_block is not None and bool(self.attn_block.has_kv_cache)

    def forward(
        self,
        hidden_states: torch.Tensor,
        position_embeddings: tuple[torch.Tensor, torch.Tensor],
        attention_mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        cache_idx: int | None = None,
    ) -> torch.Tensor:
        if self.attn_block is not None:
            hidden_states = hidden_states + self.attn_block(
                hidden_states, position_embeddings, attention_mask, past_key_values, cache_idx
            )
        if self.ffn_block is not None:
            hidden_states = hidden_states + self.ffn_block(hidden_states)
        return hidden_states


class DeciLMPreTrainedModel(PreTrainedModel):
    config_class = DeciLMConfig
    config: DeciLMConfig
    base_model_prefix = "model"
    _no_split_modules = ["DeciLMDecoderLayer"]
    _skip_keys_device_placement = ["past_key_values"]
    _supports_sdpa = True


class DeciLMModel(DeciLMPreTrainedModel):
    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.layers = nn.ModuleList(DeciLMDecoderLayer(config, i) for i in range(config.num_hidden_layers))
        self.norm = DeciLMRMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.rotary_emb = DeciLMRotaryEmbedding(config)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.embed_tokens

    # transformers types `value` as any nn.Module; only an embedding fits here
    def set_input_embeddings(self, value: nn.Embedding) -> None:  # type: ignore[override]
        self.embed_tokens = value

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        **kwargs,
    ) -> BaseModelOutputWithPast:
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("pass exactly one of input_ids or inputs_embeds")
        h = self.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if use_cache and past_key_values is None:
            # Config-less DynamicCache grows lazily: one entry per GQA layer, none for linear/no_op layers.
            past_key_values = DynamicCache()
        past = past_key_values.get_seq_length() if past_key_values is not None else 0
        T = h.shape[1]
        positions = (
            position_ids if position_ids is not None else torch.arange(past, past + T, device=h.device)[None]
        )
        if attention_mask is not None and attention_mask.ndim == 2 and bool(attention_mask.all()):
            attention_mask = None  # no padding: let SDPA use its causal kernel
        mask = (
            attention_mask_for(T, past + T, h.device, attention_mask) if attention_mask is not None else None
        )
        position_embeddings = self.rotary_emb(h, positions)

        hidden_states = [h] if output_hidden_states else None
        h = self.forward_layers(
            h,
            position_embeddings=position_embeddings,
            mask=mask,
            past_key_values=past_key_values,
            hidden_states=hidden_states,
        )
        h = self.norm(h)
        if hidden_states is not None:
            hidden_states[-1] = h  # Llama convention: the last entry is the normed final state
        return BaseModelOutputWithPast(
            last_hidden_state=h,
            past_key_values=past_key_values if use_cache else None,
            hidden_states=tuple(hidden_states) if hidden_states is not None else None,
        )

    def forward_layers(
        self,
        h: torch.Tensor,
        start: int = 0,
        stop: int | None = None,
        *,
        position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
        past_key_values: Cache | None = None,
        hidden_states: list[torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """Decoder layers start..stop-1 on hidden state `h` [B, T, H], appending each output to `hidden_states`.

        `forward` runs all of them; replace-1-block scoring runs a slice from a cached layer input. Without
        `position_embeddings` the positions are 0..T-1 (a fresh sequence, no cache)."""
        if position_embeddings is None:
            position_embeddings = self.rotary_emb(h, torch.arange(h.shape[1], device=h.device)[None])
        layers = cast(Sequence[DeciLMDecoderLayer], self.layers)  # a ModuleList's items type as nn.Module
        # Only GQA layers own a KV-cache slot, so a layer's slot is the number of GQA layers before it.
        cache_idx = sum(layer.has_kv_cache for layer in layers[:start])
        for layer in layers[start:stop]:
            h = layer(h, position_embeddings, mask, past_key_values, cache_idx)
            cache_idx += layer.has_kv_cache
            if hidden_states is not None:
                hidden_states.append(h)
        return h


class DeciLMForCausalLM(DeciLMPreTrainedModel, GenerationMixin):
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: DeciLMConfig) -> None:
        super().__init__(config)
        self.model = DeciLMModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.embed_tokens

    # transformers types `value` as any nn.Module; only an embedding fits here
    def set_input_embeddings(self, value: nn.Embedding) -> None:  # type: ignore[override]
        self.model.embed_tokens = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value

    @property
    def block_configs(self) -> list[BlockConfig]:
        return [layer.block_config for layer in self.model.layers]

    def replace_block(
        self,
        layer_idx: int,
        block_config: BlockConfig,
        attn_block: nn.Module | None,
        ffn_block: nn.Module | None,
    ) -> tuple[BlockConfig, nn.Module | None, nn.Module | None]:
        """Swap layer `layer_idx`'s subblocks in place (config kept in sync); returns the previous ones."""
        layer = self.model.layers[layer_idx]
        previous = (layer.block_config, layer.attn_block, layer.ffn_block)
        layer.set_blocks(block_config, attn_block, ffn_block)
        self.config.block_configs[layer_idx] = block_config.to_dict()
        return previous

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        output_hidden_states: bool | None = None,
        logits_to_keep: int = 0,
        **kwargs,
    ) -> CausalLMOutputWithPast:
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            output_hidden_states=output_hidden_states,
        )
        h = out.last_hidden_state
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            # next-token loss: position t predicts token t + 1
            loss = F.cross_entropy(
                logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100
            )
        return CausalLMOutputWithPast(
            loss=loss, logits=logits, past_key_values=out.past_key_values, hidden_states=out.hidden_states
        )


__all__ = [
    "DeciLMForCausalLM",
    "DeciLMModel",
    "DeciLMPreTrainedModel",
    "DeciLMDecoderLayer",
    "build_attention_block",
    "build_ffn_block",
]
