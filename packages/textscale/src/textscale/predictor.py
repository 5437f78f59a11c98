"""The predictor (docTR-like): a list of images in, per image quads (N, 4, 2) and scores out.

    >>> detector = TextDetector.from_checkpoint("model.pt")             # adaptive two-pass inference
    >>> [page] = detector([image])                                      # HxWx3 uint8 RGB (or gray / RGBA)
    >>> page.polygons.shape, page.scores.shape                          # (N, 4, 2), (N,)

``mode="fixed"`` with ``long_side`` is the single-pass baseline; ``detect_oracle`` takes ground-truth regions.
Pre-processing (channel conversion, the size limit, resizing, padding to 32, normalisation inside the network)
and post-processing (DB boxes, packing, mapping back, NMS) are hidden here. The network may be a torch module or
an ONNX file run by onnxruntime (``export.OnnxNet``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from textscale.pipeline import (
    AdaptiveConfig,
    NetFn,
    Result,
    detect_adaptive,
    detect_fixed,
    detect_oracle,
    resize_long,
)
from textscale.postprocess import PostConfig
from textscale.torch_model import STRIDE

MAX_SIDE = 8192  # larger images are shrunk to this long side first (with a message): memory, not accuracy


@dataclass
class Page:
    polygons: np.ndarray  # (N, 4, 2) float, image pixels, clockwise from the top-left
    scores: np.ndarray  # (N,)
    result: Result  # timings, pixels processed, coarse map, canvas


def as_rgb(image: np.ndarray) -> np.ndarray:
    """HxW (gray), HxWx1, HxWx3 or HxWx4 (RGBA: alpha dropped) uint8 -> HxWx3 uint8 RGB."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if image.dtype.kind == "f" and image.size and image.max() <= 1.0:
            image = image * 255
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 2:
        image = image[..., None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4) or min(image.shape[:2]) < 1:
        raise ValueError(f"an image must be HxW, HxWx1, HxWx3 or HxWx4; got shape {image.shape}")
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[..., :3])


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB; raises OSError/ValueError when it cannot be read whole."""
    return read_image_limited(path, None)[0]


def read_image_limited(path: str | os.PathLike[str], max_side: int | None) -> tuple[np.ndarray, float]:
    """An image file as HxWx3 uint8 RGB, shrunk so that its long side is at most ``max_side`` (a JPEG is decoded
    at a reduced size directly, so a huge file never sits in memory whole), and the factor applied."""
    saved = Image.MAX_IMAGE_PIXELS
    Image.MAX_IMAGE_PIXELS = None  # PIL refuses > 179 MP as a "decompression bomb"; we shrink instead
    try:
        with Image.open(path) as im:
            full = im.size
            factor = 1.0 if max_side is None else min(1.0, max_side / max(full))
            target = (max(1, round(full[0] * factor)), max(1, round(full[1] * factor)))
            if factor < 1:
                im.draft("RGB", target)
            im.load()  # a truncated file fails here, not later
            rgb = im.convert("RGBA") if im.mode in ("P", "LA", "PA") else im.convert("RGB")
            if rgb.size != target:
                rgb = rgb.resize(target, Image.Resampling.BILINEAR)
    finally:
        Image.MAX_IMAGE_PIXELS = saved
    return as_rgb(np.asarray(rgb)), target[0] / full[0]


class TorchNet:
    """A ``NetFn`` around the torch network: pad to a multiple of 32, run, crop the maps back."""

    def __init__(self, net: torch.nn.Module, device: str | torch.device = "cpu"):
        self.device = torch.device(device)
        self.net = net.eval().to(self.device)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        x = np.zeros((1, 3, h + (-h) % STRIDE, w + (-w) % STRIDE), np.float32)
        x[0, :, :h, :w] = image.transpose(2, 0, 1)
        with torch.inference_mode():
            out = self.net(torch.from_numpy(x).to(self.device)).float().cpu().numpy()
        return out[0, 0, :h, :w], out[0, 1, :h, :w]


class TextDetector:
    def __init__(
        self,
        net: NetFn,
        canonical_height: float = 24.0,
        mode: str = "adaptive",
        long_side: int | None = None,
        adaptive: AdaptiveConfig | None = None,
        post: PostConfig | None = None,
        max_side: int = MAX_SIDE,
        log: Any = None,
    ):
        if mode not in ("adaptive", "fixed"):
            raise ValueError(f"mode must be 'adaptive' or 'fixed', got {mode!r}")
        if mode == "fixed" and not long_side:
            raise ValueError("mode 'fixed' needs long_side (e.g. 720, 1024, 1440, 2048)")
        self.net, self.mode, self.long_side, self.max_side = net, mode, long_side, max_side
        self.adaptive = replace(adaptive or AdaptiveConfig(), canonical_height=canonical_height)
        self.post = post or PostConfig()
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    @classmethod
    def from_checkpoint(
        cls,
        path: str | os.PathLike[str],
        device: str = "cpu",
        inference: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> TextDetector:
        """From a model file (``textscale train``); ``inference`` is a profile's inference section."""
        from textscale.train import load_net

        net, hp = load_net(path)
        if inference is not None:
            kwargs.setdefault("adaptive", adaptive_config(inference))
            kwargs.setdefault("post", post_config(inference))
        return cls(TorchNet(net, device), float(hp["canonical_height"]), **kwargs)

    def _limited(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        image = as_rgb(image)
        if max(image.shape[:2]) <= self.max_side:
            return image, 1.0
        small, f = resize_long(image, self.max_side)
        self.log(
            f"image of {image.shape[1]}x{image.shape[0]} px is larger than --max-side {self.max_side}: "
            f"detecting on a copy shrunk to {small.shape[1]}x{small.shape[0]}, boxes mapped back"
        )
        return small, f

    def detect(self, image: np.ndarray) -> Page:
        image, f = self._limited(image)
        if self.mode == "fixed":
            assert self.long_side is not None
            result = detect_fixed(self.net, image, self.long_side, self.post)
        else:
            result = detect_adaptive(self.net, image, self.adaptive, self.post)
        return Page(result.boxes.quads / f, result.boxes.scores, result)

    def detect_oracle(self, image: np.ndarray, gt_quads: np.ndarray) -> Page:
        image, f = self._limited(image)
        result = detect_oracle(self.net, image, np.asarray(gt_quads) * f, self.adaptive, self.post)
        return Page(result.boxes.quads / f, result.boxes.scores, result)

    def __call__(self, images: Sequence[np.ndarray]) -> list[Page]:
        return [self.detect(image) for image in images]


def adaptive_config(inference: dict[str, Any]) -> AdaptiveConfig:
    return AdaptiveConfig(
        coarse_long_side=int(inference["coarse_long_side"]),
        keep_height=float(inference["keep_height"]),
        pad=float(inference["pad"]),
    )


def post_config(inference: dict[str, Any]) -> PostConfig:
    return PostConfig(
        thresh=float(inference["thresh"]),
        box_thresh=float(inference["box_thresh"]),
        unclip_ratio=float(inference["unclip_ratio"]),
    )


def draw_detections(
    image: np.ndarray, polygons: np.ndarray, colour: tuple[int, int, int] = (255, 0, 0)
) -> Image.Image:
    """The image with each quad outlined."""
    out = Image.fromarray(as_rgb(image))
    draw = ImageDraw.Draw(out)
    width = max(2, round(max(out.size) / 800))
    for quad in polygons:
        draw.polygon([(float(x), float(y)) for x, y in quad], outline=colour, width=width)
    return out


def save_png(picture: Image.Image | np.ndarray, path: str | os.PathLike[str]) -> Path:
    """Write a PNG atomically (a float map in [0, 1] is written as 8-bit gray)."""
    from effinfer_core.atomic import atomic_file

    if isinstance(picture, np.ndarray):
        array = picture
        if array.dtype != np.uint8:
            array = (np.clip(array, 0, 1) * 255).astype(np.uint8)
        picture = Image.fromarray(array)
    with atomic_file(Path(path)) as tmp:
        picture.save(tmp, format="PNG")
    return Path(path)
