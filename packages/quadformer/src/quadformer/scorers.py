"""Saliency scorers: images -> importance maps [B, H', W'] that the quadtree splits by (higher = split first).

One small interface: a ``Scorer`` is an ``nn.Module`` whose ``forward(images, maps=None)`` takes RGB images in [0, 1]
([B, 3, H, W], any device) and returns importance maps at any resolution; the quadtree averages them over each patch.
``maps`` are per-image precomputed maps (e.g. ground-truth object masks) for scorers that need them.

- ``pixel-blur``: squared difference between the image and a blurred copy (down-sampled by ``blur`` and back), the
  channel mean per pixel. The authors' score is the root of its mean over a patch; the root is monotone, so the
  splits are the same. No weights; semantically weak (texture counts as much as objects).
- ``feature:<timm CNN>``: the authors' feature-based scorer: one feature level of a timm CNN on the image and on
  copies blurred by 2 and 4; importance = channel-mean squared difference, averaged over the copies. No ImageNet
  weights can be had offline, so the CNN is randomly initialised unless ``checkpoint`` names a local timm checkpoint
  file (random conv features still respond to edges and texture, roughly like pixel-blur at a coarser scale).
- ``random``: uniform noise from a seeded generator (a control: the quadtree without saliency); in eval mode the
  same for every call, so predictions are reproducible.
- ``oracle``: the precomputed maps as they are (e.g. ground-truth masks: what a perfect saliency model would give).
"""

from __future__ import annotations

from pathlib import Path

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

SCORERS = ("pixel-blur", "feature", "random", "oracle")
# the default feature CNN: 272K parameters, about 15 MFLOPs per 128 px image (the authors used ShuffleNetV2 x0.5,
# 342K); cut at stride 8, fine enough for 8 px min patches (a stride-32 map is too coarse for small images)
DEFAULT_CNN, DEFAULT_LEVEL = "mobilenetv3_small_050", 2
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Scorer(nn.Module):
    """Base class of scorers: implement ``forward(images, maps=None) -> [B, H', W']`` (higher = more important)."""

    needs_maps: bool = False  # True: forward needs the per-image precomputed ``maps``
    name: str = "scorer"

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(images, maps) -> [B, H', W']"
        )


def _blurred(images: Tensor, factor: int) -> Tensor:
    """Down-sample by ``factor`` (area average) and back up (bilinear): the image without its finest detail."""
    small = F.avg_pool2d(images, factor)
    return F.interpolate(small, size=images.shape[-2:], mode="bilinear", align_corners=False)


class PixelBlurScorer(Scorer):
    name = "pixel-blur"

    def __init__(self, blur: int = 4):
        super().__init__()
        self.blur = blur

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        return (images - _blurred(images, self.blur)).square().mean(dim=1)


class FeatureScorer(Scorer):
    """A timm CNN's features of the image against those of blurred copies (feature level ``level``: stride
    2**(level+1) for most timm CNNs)."""

    name = "feature"
    mean: Tensor
    std: Tensor

    def __init__(
        self, cnn: str = DEFAULT_CNN, level: int = DEFAULT_LEVEL, checkpoint: str | Path | None = None
    ):
        super().__init__()
        overlay = {"file": str(checkpoint)} if checkpoint else None
        if checkpoint and not Path(checkpoint).is_file():
            raise FileNotFoundError(f"scorer checkpoint {checkpoint} does not exist")
        # pretrained only from a local file: nothing is downloaded at run time
        self.cnn = timm.create_model(
            cnn,
            pretrained=bool(checkpoint),
            pretrained_cfg_overlay=overlay,
            features_only=True,
            out_indices=(level,),
        )
        self.cnn_name, self.level, self.pretrained = cnn, level, bool(checkpoint)
        self.cnn.eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> FeatureScorer:
        super().train(mode)
        self.cnn.eval()  # frozen: batch-norm statistics never move
        return self

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        copies = torch.cat([images, _blurred(images, 2), _blurred(images, 4)])
        feats = self.cnn((copies - self.mean) / self.std)[0]
        sharp, half, quarter = feats.chunk(3)
        return ((sharp - half).square().mean(1) + (sharp - quarter).square().mean(1)) / 2


class RandomScorer(Scorer):
    """Fresh noise at every training step; in eval mode the generator restarts from the seed at every call, so
    predictions are reproducible (the same batch gets the same tokens)."""

    name = "random"

    def __init__(self, seed: int = 0, resolution: int = 16):
        super().__init__()
        self.resolution, self.seed = resolution, seed
        self.generator = torch.Generator().manual_seed(seed)

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        if not self.training:
            self.generator.manual_seed(self.seed)
        b, _, h, w = images.shape
        shape = (b, max(1, h * self.resolution // max(h, w)), max(1, w * self.resolution // max(h, w)))
        return torch.rand(shape, generator=self.generator).to(images.device)


class OracleScorer(Scorer):
    """Precomputed maps, e.g. ground-truth object masks (the data sets here keep them beside each image)."""

    name = "oracle"
    needs_maps = True

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        if maps is None:
            raise ValueError(
                "the oracle scorer needs precomputed maps (e.g. ground-truth masks) with each batch; this data "
                "has none: use the pixel-blur, feature or random scorer"
            )
        if maps.shape[0] != images.shape[0]:
            raise ValueError(f"{maps.shape[0]} maps for {images.shape[0]} images")
        return maps.float().reshape(maps.shape[0], *maps.shape[-2:])


def canonical_scorer(name: str) -> str:
    """The scorer name with its defaults spelled out (``feature`` -> ``feature:mobilenetv3_small_050@2``), so a
    saved run names what it used even if a default changes later."""
    kind, _, arg = name.partition(":")
    if kind != "feature":
        return name
    cnn, _, level = (arg or DEFAULT_CNN).partition("@")
    return f"feature:{cnn}@{level or DEFAULT_LEVEL}"


def create_scorer(name: str, *, seed: int = 0, checkpoint: str | Path | None = None) -> Scorer:
    """``pixel-blur``, ``feature`` / ``feature:<timm CNN name>[@level]``, ``random``, ``oracle``."""
    kind, _, arg = name.partition(":")
    if kind == "pixel-blur":
        return PixelBlurScorer()
    if kind == "feature":
        cnn, _, level = (arg or DEFAULT_CNN).partition("@")
        try:
            return FeatureScorer(cnn, int(level or DEFAULT_LEVEL), checkpoint)
        except RuntimeError as err:  # timm: unknown model name
            raise ValueError(f"scorer {name!r}: {err}") from err
    if kind == "random":
        return RandomScorer(seed)
    if kind == "oracle":
        return OracleScorer()
    raise ValueError(
        f"unknown scorer {name!r}; known scorers: {', '.join(SCORERS)} (feature:<timm CNN>[@level])"
    )
