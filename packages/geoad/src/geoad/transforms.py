"""Input preprocessing and the geometric transformations that self-label the training set.

The paper's 72 transformations are the product, in this order, of

    flip  in {no, yes}            horizontal mirror (last axis)
    tx    in {0, -s, +s}          horizontal shift by s = side // 4, *reflect* padding (numpy/torch 'reflect':
    ty    in {0, -s, +s}          vertical shift      the edge pixel is not repeated: ... c b | a b c ...)
    rot90 k in {0, 1, 2, 3}       k quarter turns counter-clockwise, as ``np.rot90(img, k)`` / ``torch.rot90``

applied flip -> translate -> rotate. A positive shift moves the content right (tx) or down (ty):
``out[i, j] = in_reflected[i - ty * s, j - tx * s]``.  (The authors' Keras code shifts with scipy's 'reflect',
which *does* repeat the edge pixel, numpy's 'symmetric'; we follow numpy's 'reflect' as the method note asks.)

Every such transformation of a square image is a fixed map from output pixels to input pixels. We build that map
once per image size by applying the definition above to an image of pixel indices, and then transform a whole
batch with a single ``gather`` on the batch's device: no per-sample Python loop, no 72x copy of the data set.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

FACTORS = ("flip", "tx", "ty", "rot")
# Named sets: the paper's 72, the 8-transform set for quick studies, and the sizes the benchmark sweeps.
NAMED_SETS = {
    "72": "flip+tx+ty+rot",
    "all": "flip+tx+ty+rot",
    "36": "tx+ty+rot",
    "18": "flip+tx+ty",
    "8": "flip+rot",
    "4": "rot",
}


@dataclass(frozen=True)
class Transform:
    flip: bool
    tx: int  # -1, 0, +1 quarter sides
    ty: int
    k: int  # counter-clockwise quarter turns

    def index_map(self, size: int) -> Tensor:
        """For each output pixel (row-major), the row-major index of the input pixel it copies."""
        img = torch.arange(size * size, dtype=torch.float64).view(1, 1, size, size)
        if self.flip:
            img = img.flip(-1)
        if self.tx or self.ty:
            s = size // 4
            img = F.pad(img, (s, s, s, s), mode="reflect")
            top, left = s - self.ty * s, s - self.tx * s
            img = img[..., top : top + size, left : left + size]
        img = torch.rot90(img, self.k, dims=(-2, -1))
        return img.flatten().long()


class TransformSet:
    """An ordered set of transformations; the position of a transformation is its self-supervised label.

    ``spec`` is a name from ``NAMED_SETS`` or factors joined by '+', e.g. ``"flip+rot"`` (8) or ``"tx+ty+rot"`` (36).
    Every set keeps the paper's enumeration order, so it is the 72-set with the unused factors held at identity.
    """

    def __init__(self, spec: str = "72") -> None:
        factors = NAMED_SETS.get(spec, spec).split("+")
        unknown = [f for f in factors if f not in FACTORS]
        if unknown or not factors or len(set(factors)) != len(factors):
            raise ValueError(
                f"unknown transform set {spec!r}: use one of {sorted(NAMED_SETS)} or factors from {FACTORS} "
                "joined by '+', e.g. 'flip+rot'"
            )
        self.spec = spec
        self.factors = tuple(f for f in FACTORS if f in factors)
        self.transforms = tuple(
            Transform(flip, tx, ty, k)
            for flip, tx, ty, k in itertools.product(
                (False, True) if "flip" in factors else (False,),
                (0, -1, 1) if "tx" in factors else (0,),
                (0, -1, 1) if "ty" in factors else (0,),
                range(4) if "rot" in factors else (0,),
            )
        )
        self._maps: dict[tuple[int, torch.device], Tensor] = {}

    def __len__(self) -> int:
        return len(self.transforms)

    def __repr__(self) -> str:
        return f"TransformSet({self.spec!r}, n={len(self)})"

    def index_maps(self, size: int, device: torch.device | str) -> Tensor:
        """[T, size*size] gather indices, built once per (size, device) and cached there."""
        key = (size, torch.device(device))
        if key not in self._maps:
            self._maps[key] = torch.stack([t.index_map(size) for t in self.transforms]).to(device)
        return self._maps[key]

    def _maps_for(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
            raise ValueError(f"expected square images [B, C, H, H], got shape {tuple(x.shape)}")
        return self.index_maps(x.shape[-1], x.device)

    def apply(self, x: Tensor, labels: Tensor) -> Tensor:
        """Transform image b by transformation ``labels[b]``: [B, C, H, W] -> [B, C, H, W]."""
        b, c, h, w = x.shape
        maps = self._maps_for(x)[labels]  # [B, HW]
        return x.flatten(2).gather(2, maps[:, None, :].expand(b, c, h * w)).view(b, c, h, w)

    def expand(self, x: Tensor) -> Tensor:
        """Every transformation of every image, image-major: [B, C, H, W] -> [B * T, C, H, W]."""
        b, c, h, w = x.shape
        out = x.flatten(2)[:, :, self._maps_for(x)]  # [B, C, T, HW]
        return out.transpose(1, 2).reshape(b * len(self), c, h, w)


@dataclass(frozen=True)
class Preprocessing:
    """How raw images become network inputs; stored in the detector so scoring repeats it exactly.

    Raw images are uint8 [N, C, raw_size, raw_size]; they are zero-padded by ``pad`` on each side (Fashion-MNIST:
    28 -> 32, as the paper does) and scaled to [-1, 1].
    """

    channels: int
    raw_size: int
    pad: int = 0

    @classmethod
    def for_images(cls, images: Tensor, pad: int | None = None) -> Preprocessing:
        """The preprocessing for training images uint8 [N, C, H, H]; pad None: 2 for 28x28 (-> 32, the paper), else 0."""
        _, c, h, w = images.shape
        if h != w:
            raise ValueError(f"training images must be square (the transformations rotate them), got {h}x{w}")
        return cls(c, h, pad if pad is not None else (2 if h == 28 else 0))

    @property
    def image_size(self) -> int:
        return self.raw_size + 2 * self.pad

    def __call__(self, images: Tensor) -> Tensor:
        """uint8 [B, C, raw, raw] on any device -> float32 [B, C, size, size] in [-1, 1] on the same device."""
        x = images.float() / 127.5 - 1.0
        # padding the uint8 value 0 (-> -1) is what the paper did: np.pad on the raw images, then normalise
        return F.pad(x, (self.pad,) * 4, value=-1.0) if self.pad else x

    def conform(self, images: Tensor, *, what: str = "input") -> Tensor:
        """Bring uint8 [N, C, H, W] images of another size or channel count to this preprocessing, with a notice."""
        n, c, h, w = images.shape
        if c != self.channels:
            if c == 3 and self.channels == 1:
                weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
                images = (images.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)
            elif c == 1 and self.channels == 3:
                images = images.expand(n, 3, h, w).contiguous()
            else:
                raise ValueError(
                    f"{what} has {c} channels, the detector expects {self.channels}; convert the images to "
                    f"{'greyscale' if self.channels == 1 else 'RGB'} first"
                )
            notice(f"{what}: converted {c} -> {self.channels} channels")
        if (h, w) != (self.raw_size, self.raw_size):
            images = (
                F.interpolate(
                    images.float(),
                    size=(self.raw_size, self.raw_size),
                    mode="bilinear",
                    antialias=True,
                    align_corners=False,
                )
                .round()
                .clamp(0, 255)
                .to(torch.uint8)
            )
            notice(f"{what}: resized {h}x{w} -> {self.raw_size}x{self.raw_size}")
        return images

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def notice(msg: str) -> None:
    print(f"notice: {msg}", file=sys.stderr)
