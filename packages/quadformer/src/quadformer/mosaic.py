"""A PNG of one image's tokens: the image with each patch outlined, beside what the ViT sees (each patch
area-averaged to the base patch size and blown back up)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from effinfer_core.atomic import atomic_file
from quadformer.quadtree import Tokens


def mosaic_view(image: Tensor, tokens: Tokens, base_patch: int, b: int = 0) -> Tensor:
    """float [3, H, W]: each token of image ``b`` replaced by its area average at ``base_patch`` resolution."""
    out = image.clone().float()
    for top, left, size in zip(
        tokens.top[b].tolist(), tokens.left[b].tolist(), tokens.size[b].tolist(), strict=True
    ):
        patch = out[:, top : top + size, left : left + size]
        if size > base_patch:  # drawing only: a loop over tokens is fine here
            small = F.avg_pool2d(patch.unsqueeze(0), size // base_patch)
            patch.copy_(F.interpolate(small, scale_factor=size // base_patch, mode="nearest")[0])
    return out


def draw_mosaic(
    image: Tensor, tokens: Tokens, path: str | Path, base_patch: int, b: int = 0, scale: int = 4
) -> Path:
    """Save ``path`` (PNG): image ``b`` of the batch with its token outlines (colour by patch size), and the
    mosaic the ViT sees. ``image``: float [0, 1] or uint8, [3, H, W]."""
    from PIL import Image, ImageDraw

    x = image.float() / 255 if not image.is_floating_point() else image.float()
    panels = [x, mosaic_view(x, tokens, base_patch, b)]
    h, w = x.shape[-2:]
    canvas = Image.new("RGB", (2 * w * scale + scale * 4, h * scale), "white")
    for k, panel in enumerate(panels):
        rgb = (panel.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).contiguous().numpy()
        canvas.paste(
            Image.fromarray(rgb).resize((w * scale, h * scale), Image.Resampling.NEAREST),
            (k * (w * scale + scale * 4), 0),
        )
    draw = ImageDraw.Draw(canvas)
    colours = ["#ffffff", "#ffd400", "#ff5a00", "#ff0080", "#8000ff", "#00c0ff"]
    for top, left, size, level in zip(
        *(t[b].tolist() for t in (tokens.top, tokens.left, tokens.size, tokens.level)), strict=True
    ):
        box = (left * scale, top * scale, (left + size) * scale - 1, (top + size) * scale - 1)
        draw.rectangle(box, outline=colours[min(level, len(colours) - 1)])
    with atomic_file(path) as tmp:
        canvas.save(tmp, format="PNG")
    return Path(path)
