"""Mixed-resolution tokens into any timm ViT (plain torch, no Lightning).

A token is a square patch of any power-of-two size. It is brought to the ViT's patch size ``p`` by an area average
(``avg_pool2d`` per size: anti-aliased, unlike the authors' sampling) -- or, for patches smaller than ``p``, by
repeating each pixel -- and embedded by the ViT's own ``patch_embed`` projection (its conv kernel as a matrix), so a
standard or pretrained ViT is reused unchanged. Positions are taken at each patch's float centre:

- ``learned``: the ViT's learned position table, read as an image over the input and sampled bilinearly at the
  centre (a grid patch's centre lands exactly on its table entry, so the vanilla grid reproduces timm's forward);
- ``sinusoidal``: the authors' choice, 2-D sin/cos of the centre in min-patch units (y and x half the channels each).

The vanilla ViT at N tokens is the same code with every patch one size (``uniform_tokens``): the image resized to a
grid of N patches by the same area average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import timm
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import VisionTransformer, checkpoint_filter_fn
from torch import Tensor, nn

from quadformer.quadtree import QuadtreeSpec, Tokens, quadtree_tokens, uniform_tokens
from quadformer.scorers import Scorer

Position = Literal["learned", "sinusoidal"]


class CheckpointError(ValueError):
    """A checkpoint that does not fit the model asked for (another architecture, a different file kind)."""


def _state_dict(path: str | Path) -> dict[str, Tensor]:
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{path} holds no state dict of tensors")
    return state


def create_vit(
    name: str,
    num_classes: int,
    img_size: int | tuple[int, int],
    *,
    checkpoint: str | Path | None = None,
    position: Position = "learned",
    **kwargs: Any,
) -> VisionTransformer:
    """A timm ViT by name (never downloaded), optionally initialised from a local checkpoint file; the classifier
    is re-made when its class count differs, the position table resampled when its grid does."""
    try:
        vit = timm.create_model(
            name,
            pretrained=False,
            num_classes=num_classes,
            img_size=img_size,
            pos_embed="none" if position == "sinusoidal" else "learn",
            **kwargs,
        )
    except RuntimeError as err:
        raise ValueError(f"ViT {name!r}: {err}") from err
    if not isinstance(vit, VisionTransformer):
        raise ValueError(f"{name!r} is a {type(vit).__name__}, not a timm VisionTransformer")
    if checkpoint is not None:
        state = _state_dict(checkpoint)
        if position == "sinusoidal":
            state.pop("pos_embed", None)
        state = checkpoint_filter_fn(state, vit)  # resamples the position table to this grid
        own = vit.state_dict()
        head = {k for k, v in state.items() if k.startswith("head.") and own.get(k, v).shape != v.shape}
        state = {k: v for k, v in state.items() if k not in head}
        try:
            missing, unexpected = vit.load_state_dict(state, strict=False)
        except RuntimeError as err:
            raise CheckpointError(f"{checkpoint} does not fit {name}: {str(err)[:300]}") from err
        missing = [k for k in missing if not k.startswith("head.")]
        if missing or unexpected:
            raise CheckpointError(
                f"{checkpoint} does not fit {name}: missing {missing[:5]}, unexpected {unexpected[:5]} "
                "(a checkpoint of another architecture?)"
            )
    return vit


def sincos_2d(centres: Tensor, dim: int, temperature: float = 10000.0) -> Tensor:
    """[..., 2] float (y, x) positions -> [..., dim]: sin/cos of y in the first half, of x in the second."""
    if dim % 4:
        raise ValueError(f"sinusoidal positions need an embedding width divisible by 4, got {dim}")
    omega = 1.0 / temperature ** (
        torch.arange(dim // 4, device=centres.device, dtype=torch.float32) / (dim // 4)
    )
    y, x = (centres[..., i : i + 1].float() * omega for i in (0, 1))
    return torch.cat([y.sin(), y.cos(), x.sin(), x.cos()], dim=-1)


def _bilinear(table: Tensor, uv: Tensor) -> Tensor:
    """Sample table [gh, gw, D] at float grid coordinates uv [B, N, 2] (row, column; clamped to the table)."""
    gh, gw, _ = table.shape
    u = uv[..., 0].clamp(0, gh - 1)
    v = uv[..., 1].clamp(0, gw - 1)
    u0, v0 = u.floor().long(), v.floor().long()
    u1, v1 = (u0 + 1).clamp(max=gh - 1), (v0 + 1).clamp(max=gw - 1)
    fu, fv = (u - u0).unsqueeze(-1), (v - v0).unsqueeze(-1)
    top = table[u0, v0] * (1 - fv) + table[u0, v1] * fv
    bottom = table[u1, v0] * (1 - fv) + table[u1, v1] * fv
    return top * (1 - fu) + bottom * fu


class MixedResolutionViT(nn.Module):
    """A timm ViT that takes images in [0, 1] and any ``Tokens`` (mixed sizes, float-centre positions)."""

    mean: Tensor
    std: Tensor

    def __init__(self, vit: VisionTransformer, position: Position = "learned"):
        super().__init__()
        if position == "learned" and vit.pos_embed is None:
            raise ValueError("learned positions need a ViT with a position table (pos_embed='learn')")
        self.vit, self.position = vit, position
        self.patch = vit.patch_embed.patch_size[0]
        cfg: dict[str, Any] = dict(
            getattr(vit, "pretrained_cfg", None) or {}
        )  # the mean/std it was trained with
        for key in ("mean", "std"):
            self.register_buffer(
                key, torch.tensor(cfg.get(key, (0.5,) * 3)).view(1, 3, 1, 1), persistent=False
            )

    def patches(self, images: Tensor, tokens: Tokens) -> Tensor:
        """[B, N, C * p * p]: each token's pixels brought to p x p, laid out like the patch-embed conv's kernel."""
        spec, p = tokens.spec, self.patch
        b, c = images.shape[:2]
        per_level, offsets, start = [], [0] * spec.levels, 0
        # one pooled image per patch size that has tokens (a vanilla grid or N = N0 has one), then one gather
        for level in tokens.level.unique().tolist():
            s = spec.size(level)
            x = F.avg_pool2d(images, s // p) if s > p else images
            if s < p:
                x = x.repeat_interleave(p // s, dim=2).repeat_interleave(p // s, dim=3)
            gh, gw = spec.grid(level)
            per_level.append(x.reshape(b, c, gh, p, gw, p).permute(0, 2, 4, 1, 3, 5).reshape(b, gh * gw, -1))
            offsets[level], start = start, start + gh * gw
        flat = torch.tensor(offsets, device=images.device)[tokens.level] + tokens.index
        pool = torch.cat(per_level, dim=1)
        return pool.gather(1, flat.unsqueeze(-1).expand(-1, -1, pool.shape[-1]))

    def positions(self, tokens: Tokens) -> Tensor:
        """[B, N, D] position embeddings at the tokens' float centres."""
        spec, centres = tokens.spec, tokens.centres
        if self.position == "sinusoidal":
            return sincos_2d(centres / spec.min_patch, self.vit.embed_dim)
        assert self.vit.pos_embed is not None
        gh, gw = self.vit.patch_embed.grid_size
        prefix = 0 if self.vit.no_embed_class else self.vit.num_prefix_tokens
        table = self.vit.pos_embed[0, prefix:].reshape(gh, gw, -1)
        # the table spans the whole image whatever its pixel size; entry (i, j) sits at the centre of grid cell (i, j)
        scale = torch.tensor([gh / spec.height, gw / spec.width], device=centres.device)
        return _bilinear(table, centres * scale - 0.5)

    def embed(self, images: Tensor, tokens: Tokens) -> Tensor:
        """[B, prefix + N, D]: the sequence the transformer blocks take (prefix tokens, then the patches)."""
        vit = self.vit
        proj = vit.patch_embed.proj
        x = (images - self.mean) / self.std  # affine, so it commutes with the area average
        x = F.linear(self.patches(x, tokens), proj.weight.flatten(1), proj.bias)
        x = vit.patch_embed.norm(x)
        pos = self.positions(tokens)
        prefix = [t.expand(x.shape[0], -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        if self.position == "sinusoidal" or vit.no_embed_class:
            x = torch.cat([*prefix, x + pos], dim=1)  # prefix tokens get no position (as the authors' cls)
        else:
            assert vit.pos_embed is not None
            x = torch.cat([*prefix, x], dim=1)
            x = x + torch.cat([vit.pos_embed[:, : len(prefix)].expand(x.shape[0], -1, -1), pos], dim=1)
        return vit.norm_pre(vit.patch_drop(vit.pos_drop(x)))

    def forward_features(self, images: Tensor, tokens: Tokens) -> Tensor:
        return self.vit.norm(self.vit.blocks(self.embed(images, tokens)))

    def forward(self, images: Tensor, tokens: Tokens) -> Tensor:
        return self.vit.forward_head(self.forward_features(images, tokens))


class Quadformer(nn.Module):
    """The whole path from images to logits: scorer -> quadtree -> mixed-resolution ViT. Without a scorer it is the
    vanilla ViT on a grid of ``spec.max_patch`` patches (the same tokens and embedding code, all one size)."""

    def __init__(self, model: MixedResolutionViT, spec: QuadtreeSpec, num_tokens: int, scorer: Scorer | None):
        super().__init__()
        self.model, self.spec, self.scorer = model, spec, scorer
        self.num_tokens = (
            spec.check_budget(num_tokens) if scorer is not None else spec.grid(0)[0] * spec.grid(0)[1]
        )

    @property
    def needs_maps(self) -> bool:
        return self.scorer is not None and self.scorer.needs_maps

    def tokenize(self, images: Tensor, maps: Tensor | None = None) -> Tokens:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be RGB [B, 3, H, W], got shape {tuple(images.shape)}")
        if tuple(images.shape[-2:]) != (self.spec.height, self.spec.width):
            raise ValueError(
                f"images are {images.shape[-2]}x{images.shape[-1]}, the model takes "
                f"{self.spec.height}x{self.spec.width}: resize them first"
            )
        if self.scorer is None:
            return uniform_tokens(self.spec, images.shape[0], images.device)
        with torch.no_grad():  # the quadtree is not differentiable; the scorer is not trained through it
            importance = self.scorer(images, maps)
        return quadtree_tokens(importance, self.spec, self.num_tokens)

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        return self.model(images, self.tokenize(images, maps))
