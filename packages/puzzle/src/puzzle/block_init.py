"""Block inits from the parent (Puzzle section 3, "init from the parent"): the calibration statistics they read
and one init per kind of variant (reduced GQA, linear attention, reduced FFN, linear FFN). `puzzle.library`'s
docstring says what each init does and why; `build_library` calls them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from puzzle.block_config import AttentionConfig, FFNConfig
from puzzle.configuration_decilm import DeciLMConfig
from puzzle.modeling_decilm import (
    AttentionBlock,
    DeciLMForCausalLM,
    FFNBlock,
    apply_rotary_pos_emb,
    build_attention_block,
    build_ffn_block,
)


@dataclass
class CalibrationStats:
    """Per layer, means over tokens: KV-head importance [n_kv], FFN channel contribution and gate activation
    [intermediate]."""

    kv_importance: list[torch.Tensor] = field(default_factory=list)
    ffn_contribution: list[torch.Tensor] = field(default_factory=list)
    gate_mean: list[torch.Tensor] = field(default_factory=list)
    attention_fit: list[LinearFit] = field(default_factory=list)  # only with linear_fits=True
    ffn_fit: list[LinearFit] = field(default_factory=list)


class LinearFit:
    """Running sums for the least-squares map y ~ W x + b over tokens (x: a subblock's normed input, y: its output)."""

    def __init__(self, dim: int):
        self.n = 0
        self.xx = torch.zeros(dim + 1, dim + 1, dtype=torch.float64)  # x augmented with a 1 for the intercept
        self.xy = torch.zeros(dim + 1, dim, dtype=torch.float64)

    def add(self, x: torch.Tensor, y: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1]).double().cpu()
        x = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
        self.xx += x.T @ x
        self.xy += x.T @ y.reshape(-1, y.shape[-1]).double().cpu()
        self.n += len(x)

    def solve(self, bias: bool, ridge: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(W [out, in], b [out] or None); ridge is relative to the mean diagonal of x^T x (keeps it well-posed)."""
        d = self.xx.shape[0] - (0 if bias else 1)
        xx, xy = self.xx[:d, :d], self.xy[:d]
        reg = ridge * xx.diagonal().mean() * torch.eye(d, dtype=xx.dtype)
        sol = torch.linalg.solve(xx + reg, xy)  # [in (+1), out]
        return (sol[:-1].T, sol[-1]) if bias else (sol.T, None)


def _attention_head_contributions(
    block: AttentionBlock, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]
) -> torch.Tensor:
    """[n_kv] summed over tokens: || sum_{q in group(h)} W_o[:, q] @ attn_out_q ||_2 for each KV head h."""
    attn = block.self_attn
    x = block.input_layernorm(hidden_states)
    B, T, D = x.shape
    H, kv, d = attn.num_heads, attn.num_key_value_heads, attn.head_dim
    q = attn.q_proj(x).view(B, T, H, d).transpose(1, 2)
    k = attn.k_proj(x).view(B, T, kv, d).transpose(1, 2)
    v = attn.v_proj(x).view(B, T, kv, d).transpose(1, 2)
    q, k = apply_rotary_pos_emb(q, k, *position_embeddings)
    y = F.scaled_dot_product_attention(q, k, v, is_causal=T > 1, enable_gqa=kv != H)  # [B, H, T, d]
    w_o = attn.o_proj.weight.view(D, H, d)
    contrib = torch.einsum("bhtd,ehd->bhte", y, w_o).view(B, kv, H // kv, T, D).sum(2)
    return contrib.float().norm(dim=-1).sum(dim=(0, 2))


def _ffn_channel_activations(block: FFNBlock, hidden_states: torch.Tensor) -> torch.Tensor:
    """[2, intermediate] summed over tokens: |silu(gate x) * up x| and silu(gate x)."""
    mlp = block.mlp
    x = block.post_attention_layernorm(hidden_states)
    gate = mlp.act_fn(mlp.gate_proj(x)).float()
    return torch.stack([(gate * mlp.up_proj(x).float()).abs().sum(dim=(0, 1)), gate.sum(dim=(0, 1))])


def _input_ids(batch: Any) -> torch.Tensor:
    return batch["input_ids"] if isinstance(batch, dict) else batch


@torch.no_grad()
def calibration_stats(
    parent: DeciLMForCausalLM, batches: Iterable[Any], linear_fits: bool = False
) -> CalibrationStats:
    """One parent forward per batch; hooks on every subblock accumulate the init statistics (and, with
    `linear_fits`, the least-squares sums of every attention and FFN subblock)."""
    layers = parent.model.layers
    kv_sum = [torch.zeros(layer.self_attn.num_key_value_heads) for layer in layers]
    ffn_sum = [torch.zeros(2, layer.mlp.down_proj.in_features) for layer in layers]
    dim = parent.config.hidden_size
    attn_fit = [LinearFit(dim) for _ in layers] if linear_fits else []
    ffn_fit = [LinearFit(dim) for _ in layers] if linear_fits else []
    n_tokens = 0
    handles = []
    for i, layer in enumerate(layers):

        def attn_hook(module, args, out, i=i):
            kv_sum[i] += _attention_head_contributions(module, args[0], args[1]).cpu()
            if attn_fit:
                attn_fit[i].add(module.input_layernorm(args[0]), out)

        def ffn_hook(module, args, out, i=i):
            ffn_sum[i] += _ffn_channel_activations(module, args[0]).cpu()
            if ffn_fit:
                ffn_fit[i].add(module.post_attention_layernorm(args[0]), out)

        handles += [
            layer.attn_block.register_forward_hook(attn_hook),
            layer.ffn_block.register_forward_hook(ffn_hook),
        ]
    try:
        device = next(parent.parameters()).device
        for batch in batches:
            ids = _input_ids(batch).to(device)
            parent(input_ids=ids, use_cache=False)
            n_tokens += ids.numel()
    finally:
        for h in handles:
            h.remove()
    if n_tokens == 0:
        raise ValueError("calibration data is empty: pass at least one batch of input_ids")
    down_norms = [layer.mlp.down_proj.weight.float().norm(dim=0).cpu() for layer in layers]
    return CalibrationStats(
        kv_importance=[s / n_tokens for s in kv_sum],
        ffn_contribution=[s[0] / n_tokens * w for s, w in zip(ffn_sum, down_norms, strict=True)],
        gate_mean=[s[1] / n_tokens for s in ffn_sum],
        attention_fit=attn_fit,
        ffn_fit=ffn_fit,
    )


# --------------------------------------------------------------------------- inits from the parent


@torch.no_grad()
def init_reduced_attention(
    parent_block: AttentionBlock,
    config: DeciLMConfig,
    layer_idx: int,
    num_kv: int,
    importance: torch.Tensor | None = None,
) -> AttentionBlock:
    """GQA block with `num_kv` KV heads: mean-pool each group of parent KV heads, or keep its most important."""
    src = parent_block.self_attn
    n_kv, d = src.num_key_value_heads, src.head_dim
    if n_kv % num_kv:
        raise ValueError(f"{num_kv} KV heads do not divide the parent's {n_kv}")
    r = n_kv // num_kv
    block = AttentionBlock(config, num_kv, layer_idx).to(src.q_proj.weight.dtype)
    block.input_layernorm.load_state_dict(parent_block.input_layernorm.state_dict())
    block.self_attn.q_proj.load_state_dict(src.q_proj.state_dict())
    block.self_attn.o_proj.load_state_dict(src.o_proj.state_dict())
    if importance is not None:
        keep = importance.view(num_kv, r).argmax(dim=1) + torch.arange(num_kv) * r
    for name in ("k_proj", "v_proj"):
        s, t = getattr(src, name), getattr(block.self_attn, name)
        for pname, p in s.named_parameters():
            grouped = p.view(num_kv, r, d, *p.shape[1:])  # [new head, parent head in group, d, (D)]
            if importance is None:
                new = grouped.mean(dim=1)
            else:
                new = p.view(n_kv, d, *p.shape[1:])[keep]
            t.get_parameter(pname).copy_(new.reshape(t.get_parameter(pname).shape))
    return block


def _set_fitted(linear: nn.Linear, fit: LinearFit) -> None:
    weight, bias = fit.solve(bias=linear.bias is not None)
    linear.weight.copy_(weight.to(linear.weight))
    if bias is not None:
        linear.bias.copy_(bias.to(linear.bias))


@torch.no_grad()
def init_linear_attention(
    parent_block: AttentionBlock, config: DeciLMConfig, fit: LinearFit | None = None
) -> nn.Module:
    """W = W_o @ W_v (V heads repeated over their query groups); b = W_o @ b_v + b_o. With `fit`: least squares."""
    src = parent_block.self_attn
    H, kv, d = src.num_heads, src.num_key_value_heads, src.head_dim
    block = build_attention_block(config, 0, AttentionConfig(replace_with_linear=True)).to(
        src.q_proj.weight.dtype
    )
    block.input_layernorm.load_state_dict(parent_block.input_layernorm.state_dict())
    if fit is not None:
        _set_fitted(block.self_attn.linear_attn, fit)
        return block
    w_v = src.v_proj.weight.view(kv, d, -1).repeat_interleave(H // kv, dim=0).reshape(H * d, -1)
    block.self_attn.linear_attn.weight.copy_(src.o_proj.weight @ w_v)
    if src.v_proj.bias is not None:
        b_v = src.v_proj.bias.view(kv, d).repeat_interleave(H // kv, dim=0).reshape(H * d)
        block.self_attn.linear_attn.bias.copy_(src.o_proj.weight @ b_v + src.o_proj.bias)
    return block


@torch.no_grad()
def init_reduced_ffn(
    parent_block: FFNBlock, config: DeciLMConfig, size: int, contribution: torch.Tensor | None = None
) -> FFNBlock:
    """SwiGLU of width `size`: the first `size` channels, or the `size` largest by `contribution`."""
    src = parent_block.mlp
    block = build_ffn_block(config, FFNConfig.of_size(size, config.hidden_size)).to(
        src.gate_proj.weight.dtype
    )
    block.post_attention_layernorm.load_state_dict(parent_block.post_attention_layernorm.state_dict())
    if contribution is None:
        keep = torch.arange(size)
    else:
        keep = contribution.topk(size).indices.sort().values
    keep = keep.to(src.gate_proj.weight.device)
    for name in ("gate_proj", "up_proj"):
        s, t = getattr(src, name), getattr(block.mlp, name)
        t.weight.copy_(s.weight[keep])
        if s.bias is not None:
            t.bias.copy_(s.bias[keep])
    block.mlp.down_proj.weight.copy_(src.down_proj.weight[:, keep])
    if src.down_proj.bias is not None:
        block.mlp.down_proj.bias.copy_(src.down_proj.bias)
    return block


@torch.no_grad()
def init_linear_ffn(
    parent_block: FFNBlock,
    config: DeciLMConfig,
    gate_mean: torch.Tensor | None = None,
    fit: LinearFit | None = None,
) -> FFNBlock:
    """W = W_down @ diag(gate_mean) @ W_up (gate_mean = 1 if None, see module docstring);
    b = W_down @ (gate_mean * b_up) + b_down. With `fit`: least squares."""
    src = parent_block.mlp
    block = build_ffn_block(config, FFNConfig(replace_with_linear=True)).to(src.gate_proj.weight.dtype)
    block.post_attention_layernorm.load_state_dict(parent_block.post_attention_layernorm.state_dict())
    if fit is not None:
        _set_fitted(block.mlp.linear_mlp, fit)
        return block
    g = torch.ones(src.up_proj.out_features) if gate_mean is None else gate_mean
    g = g.to(src.up_proj.weight)
    block.mlp.linear_mlp.weight.copy_(src.down_proj.weight @ (g[:, None] * src.up_proj.weight))
    if src.up_proj.bias is not None:
        block.mlp.linear_mlp.bias.copy_(src.down_proj.weight @ (g * src.up_proj.bias) + src.down_proj.bias)
    return block


# --------------------------------------------------------------------------- the library
