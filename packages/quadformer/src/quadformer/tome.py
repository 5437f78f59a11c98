"""ToMe (Bolya et al., ICLR 2023): training-free token merging inside a trained timm ViT, the baseline a user would
reach for instead of Quadformer.

After each block's attention, the tokens are split alternately into sets A and B; each A token's most similar B
token (cosine of the attention keys, averaged over heads) is its match, and the ``r`` best-matched A tokens are
merged into their matches (size-weighted average). Merged tokens carry their size: attention adds log(size) to the
logits (proportional attention), so a token standing for s patches counts s times. The class token is never merged.
Written after facebookresearch/ToMe's ``bipartite_soft_matching`` and ``merge_wavg``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from quadformer.quadtree import Tokens
from quadformer.torch_model import MixedResolutionViT

Merge = Callable[[Tensor, str], Tensor]


def _unchanged(x: Tensor, mode: str = "mean") -> Tensor:
    return x


def bipartite_soft_matching(metric: Tensor, r: int, class_token: bool = True) -> Merge:
    """A function merging ``r`` tokens of [B, T, C] sequences by the similarity of ``metric`` [B, T, C']; the class
    token (first) is never merged. r is capped at half the mergeable tokens."""
    t = metric.shape[1]
    r = min(r, (t - int(class_token)) // 2)
    if r <= 0:
        return _unchanged
    with torch.no_grad():
        metric = metric / metric.norm(dim=-1, keepdim=True)
        a, b = metric[:, ::2], metric[:, 1::2]
        scores = a @ b.transpose(-1, -2)
        if class_token:
            scores[:, 0] = float("-inf")  # token 0 is in A: it is never a source
        node_max, node_idx = scores.max(dim=-1)
        edge_idx = node_max.argsort(dim=-1, descending=True).unsqueeze(-1)
        unmerged = edge_idx[:, r:].sort(dim=1).values  # keep order, so the class token stays first
        src_idx = edge_idx[:, :r]
        dst_idx = node_idx.unsqueeze(-1).gather(1, src_idx)

    def merge(x: Tensor, mode: str = "mean") -> Tensor:
        src, dst = x[:, ::2], x[:, 1::2]
        n, t1, c = src.shape
        unm = src.gather(1, unmerged.expand(n, t1 - r, c))
        moved = src.gather(1, src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(1, dst_idx.expand(n, r, c), moved, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    return merge


def merge_wavg(merge: Merge, x: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """Merge tokens x [B, T, C] as averages weighted by their sizes [B, T, 1]."""
    x = merge(x * size, "sum")
    size = merge(size, "sum")
    return x / size, size


def _attention(attn: nn.Module, x: Tensor, size: Tensor) -> tuple[Tensor, Tensor]:
    """timm ``Attention`` with proportional attention; also returns the keys averaged over heads."""
    b, n, _ = x.shape
    qkv = attn.qkv(x).reshape(b, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = attn.q_norm(q), attn.k_norm(k)
    bias = size.log().view(b, 1, 1, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
    out = attn.norm(out.transpose(1, 2).reshape(b, n, -1))
    return attn.proj_drop(attn.proj(out)), k.mean(dim=1)


class ToMeViT(MixedResolutionViT):
    """A trained ``MixedResolutionViT`` (its weights shared, not copied) that merges ``r`` tokens per block."""

    def __init__(self, model: MixedResolutionViT, r: int):
        super().__init__(model.vit, model.position)
        self.r = r
        if self.vit.num_prefix_tokens > 1:
            raise ValueError("ToMe here protects one class token; this ViT has register tokens too")
        for block in self.vit.blocks:
            if getattr(block.attn, "gate", None) is not None or not hasattr(block.attn, "qkv"):
                raise ValueError(
                    f"ToMe here supports timm's plain Attention, not {type(block.attn).__name__}"
                )

    def forward_features(self, images: Tensor, tokens: Tokens) -> Tensor:
        x = self.embed(images, tokens)
        size = torch.ones(x.shape[0], x.shape[1], 1, device=x.device, dtype=x.dtype)
        class_token = self.vit.num_prefix_tokens == 1
        for block in self.vit.blocks:
            h, keys = _attention(block.attn, block.norm1(x), size)
            x = x + block.drop_path1(block.ls1(h))
            if self.r > 0:
                x, size = merge_wavg(bipartite_soft_matching(keys, self.r, class_token), x, size)
            x = x + block.drop_path2(block.ls2(block.mlp(block.norm2(x))))
        return self.vit.norm(x)
