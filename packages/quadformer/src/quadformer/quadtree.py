"""Saliency quadtree: split an image into exactly N square patches of power-of-two sizes, batched on the device.

Start from the grid of max-size patches (N0 of them); repeatedly split the leaf with the highest importance into its
four children until the image has N = N0 + 3k leaves. Patches of the min size never split.

Every node of every level is one column of a [B, nodes] tensor, the columns sorted by the *quadtree order*: root
patches in raster order, and inside a root the Z (Morton) order of a node's top-left min-size cell (a parent comes
just before its first child). Leaves never overlap, so this order is total on them; it is also the tie rule: of two
leaves with equal importance the one first in quadtree order splits first (``torch.argmax`` returns the first
maximum). Each split step is one masked argmax over the batch and one scatter: there is no loop over images or
patches, only over the k split steps. Tokens come out in quadtree order too.

A node's importance is the mean of the importance map over its area, the map first brought to the min-patch grid
(``adaptive_avg_pool2d``: an area average when the map is finer, a repeat when it is coarser).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor


class TokenBudgetError(ValueError):
    """A token budget that the quadtree cannot produce (not N0 + 3k, or out of range)."""


class PatchSizeError(ValueError):
    """Patch sizes that are not powers of two, or an image whose sides are not multiples of the max patch."""


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


@dataclass(frozen=True)
class QuadtreeSpec:
    """The geometry of a quadtree: image size and the smallest and largest patch side (powers of two)."""

    height: int
    width: int
    min_patch: int
    max_patch: int

    def __post_init__(self) -> None:
        for name in ("min_patch", "max_patch"):
            if not _power_of_two(getattr(self, name)):
                raise PatchSizeError(f"{name} must be a power of two, got {getattr(self, name)}")
        if self.min_patch > self.max_patch:
            raise PatchSizeError(f"min_patch {self.min_patch} is larger than max_patch {self.max_patch}")
        if self.height <= 0 or self.width <= 0 or self.height % self.max_patch or self.width % self.max_patch:
            raise PatchSizeError(
                f"image size {self.height}x{self.width} does not fit max patch {self.max_patch}: both sides must "
                f"be positive multiples of it (resize or crop the images, e.g. to "
                f"{max(1, self.height // self.max_patch) * self.max_patch}x"
                f"{max(1, self.width // self.max_patch) * self.max_patch}, or use a smaller --max-patch)"
            )

    @property
    def levels(self) -> int:
        """Number of patch sizes: max_patch, max_patch / 2, ..., min_patch."""
        return int(math.log2(self.max_patch // self.min_patch)) + 1

    def size(self, level: int) -> int:
        return self.max_patch >> level

    def grid(self, level: int) -> tuple[int, int]:
        return self.height // self.size(level), self.width // self.size(level)

    @property
    def min_tokens(self) -> int:
        gh, gw = self.grid(0)
        return gh * gw

    @property
    def max_tokens(self) -> int:
        gh, gw = self.grid(self.levels - 1)
        return gh * gw

    def valid_budgets(self) -> range:
        return range(self.min_tokens, self.max_tokens + 1, 3)

    def check_budget(self, tokens: int) -> int:
        """``tokens`` if the quadtree can produce it, else a TokenBudgetError naming the nearest valid budgets."""
        lo, hi = self.min_tokens, self.max_tokens
        if lo <= tokens <= hi and (tokens - lo) % 3 == 0:
            return tokens
        where = (
            f"{self.height}x{self.width} images with patches {self.min_patch}..{self.max_patch} px allow "
            f"N = {lo} + 3k tokens up to {hi}"
        )
        if tokens < lo:
            nearest = f"{lo}"
        elif tokens > hi:
            nearest = f"{hi}"
        else:
            below = lo + (tokens - lo) // 3 * 3
            nearest = f"{below} or {below + 3}"
        raise TokenBudgetError(
            f"token budget {tokens} is not valid: {where}; nearest valid budget: {nearest}"
        )


@dataclass
class Tokens:
    """N square patches per image, in quadtree order. Pixel units; ``top``/``left``/``size`` are exact integers."""

    top: Tensor  # [B, N] int64
    left: Tensor  # [B, N] int64
    size: Tensor  # [B, N] int64
    level: Tensor  # [B, N] int64, 0 = max_patch
    index: Tensor  # [B, N] int64, raster index in its level's grid
    spec: QuadtreeSpec

    @property
    def centres(self) -> Tensor:
        """[B, N, 2] float (y, x) patch centres in pixels: top + size / 2, exact (a half of a power of two)."""
        half = self.size.to(torch.float32) / 2
        return torch.stack([self.top.to(torch.float32) + half, self.left.to(torch.float32) + half], dim=-1)

    @property
    def num_tokens(self) -> int:
        return self.top.shape[1]

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(
            self.top.to(device),
            self.left.to(device),
            self.size.to(device),
            self.level.to(device),
            self.index.to(device),
            self.spec,
        )


@dataclass(frozen=True)
class _Nodes:
    """Every node of every level, sorted in quadtree order (the tensor columns)."""

    level: Tensor  # [M] int64
    index: Tensor  # [M] raster index in its level's grid
    top: Tensor  # [M] pixels
    left: Tensor  # [M]
    children: Tensor  # [M, 4] column of each child, -1 at the min level
    level_offset: tuple[int, ...]  # start of each level in level-major (level, raster) numbering
    column: Tensor  # [level-major numbering] -> column


def _morton(y: Tensor, x: Tensor, bits: int) -> Tensor:
    code = torch.zeros_like(y)
    for b in range(bits):
        code |= ((x >> b) & 1) << (2 * b) | ((y >> b) & 1) << (2 * b + 1)
    return code


@lru_cache(maxsize=32)
def _nodes(spec: QuadtreeSpec) -> _Nodes:
    L, m = spec.levels, spec.min_patch
    levels, indices, tops, lefts, offsets = [], [], [], [], []
    start = 0
    for lev in range(L):
        gh, gw = spec.grid(lev)
        s = spec.size(lev)
        r = torch.arange(gh * gw)
        levels.append(torch.full((gh * gw,), lev))
        indices.append(r)
        tops.append(r // gw * s)
        lefts.append(r % gw * s)
        offsets.append(start)
        start += gh * gw
    level, index, top, left = (torch.cat(t) for t in (levels, indices, tops, lefts))
    # quadtree order: root (raster), then Morton code of the top-left min cell within the root, then level
    _, gw0 = spec.grid(0)
    root = top // spec.max_patch * gw0 + left // spec.max_patch
    cy, cx = (top % spec.max_patch) // m, (left % spec.max_patch) // m
    key = (root * (4 ** (L - 1)) + _morton(cy, cx, L - 1)) * L + level
    order = torch.argsort(key)
    column = torch.empty_like(order)
    column[order] = torch.arange(len(order))
    children = torch.full((len(order), 4), -1, dtype=torch.long)
    for lev in range(L - 1):  # a loop over levels only: each level's children are one tensor expression
        gh, gw = spec.grid(lev)
        r = torch.arange(gh * gw)
        y, x = r // gw, r % gw
        cgw = spec.grid(lev + 1)[1]
        kids = [(2 * y + dy) * cgw + 2 * x + dx for dy in (0, 1) for dx in (0, 1)]
        kid_cols = column[offsets[lev + 1] + torch.stack(kids, dim=1)]
        children[column[offsets[lev] + r]] = kid_cols
    return _Nodes(level[order], index[order], top[order], left[order], children, tuple(offsets), column)


def importance_pyramid(importance: Tensor, spec: QuadtreeSpec) -> list[Tensor]:
    """Per level, [B, gh, gw] mean importance of each patch (level 0 = max patches)."""
    if importance.dim() != 3:
        raise ValueError(f"importance maps must be [B, H', W'], got shape {tuple(importance.shape)}")
    if not torch.isfinite(importance).all():
        raise ValueError("importance maps must be finite (a scorer produced NaN or inf)")
    fine = F.adaptive_avg_pool2d(importance.float().unsqueeze(1), spec.grid(spec.levels - 1))
    pyramid = [fine]
    for _ in range(spec.levels - 1):
        pyramid.append(F.avg_pool2d(pyramid[-1], 2))
    return [p.squeeze(1) for p in reversed(pyramid)]


def quadtree_tokens(importance: Tensor, spec: QuadtreeSpec, num_tokens: int) -> Tokens:
    """Exactly ``num_tokens`` patches per image from importance maps [B, H', W'] (on any device)."""
    spec.check_budget(num_tokens)
    pyramid = importance_pyramid(importance, spec)
    device = importance.device
    nodes = _nodes(spec)
    B = importance.shape[0]
    level_major = torch.cat([p.reshape(B, -1) for p in pyramid], dim=1)
    score = torch.empty_like(level_major)
    score[:, nodes.column.to(device)] = level_major  # columns in quadtree order
    children = nodes.children.to(device)
    splittable = (children[:, 0] >= 0).unsqueeze(0)
    leaf = (nodes.level.to(device) == 0).unsqueeze(0).expand(B, -1).clone()
    neg = torch.tensor(float("-inf"), device=device)
    live = torch.where(leaf & splittable, score, neg)  # importance of leaves that may still split
    rows = torch.arange(B, device=device)
    for _ in range((num_tokens - spec.min_tokens) // 3):
        pick = live.argmax(dim=1)  # first maximum = first in quadtree order: the tie rule
        kids = children[pick]  # [B, 4]
        leaf[rows, pick] = False
        live[rows, pick] = neg
        leaf[rows.unsqueeze(1), kids] = True
        live[rows.unsqueeze(1), kids] = torch.where(splittable[0, kids], score[rows.unsqueeze(1), kids], neg)
    cols = leaf.nonzero()[:, 1].view(B, num_tokens)  # row-major: each image's leaves in quadtree order
    lev = nodes.level.to(device)[cols]
    return Tokens(
        top=nodes.top.to(device)[cols],
        left=nodes.left.to(device)[cols],
        size=spec.max_patch >> lev,
        level=lev,
        index=nodes.index.to(device)[cols],
        spec=spec,
    )


def uniform_tokens(spec: QuadtreeSpec, batch: int, device: torch.device | str = "cpu") -> Tokens:
    """The vanilla grid: every patch of size ``spec.max_patch`` (min_patch ignored), in raster order."""
    grid = QuadtreeSpec(spec.height, spec.width, spec.max_patch, spec.max_patch)
    gh, gw = grid.grid(0)
    r = torch.arange(gh * gw, device=device).expand(batch, -1)
    s = spec.max_patch
    zeros = torch.zeros_like(r)
    return Tokens(top=r // gw * s, left=r % gw * s, size=zeros + s, level=zeros, index=r.clone(), spec=grid)
