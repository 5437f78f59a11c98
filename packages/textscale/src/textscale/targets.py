"""Training targets, DB's recipe (MhLiao/DB ``make_shrink_map`` / ``make_border_map``) plus the scale map.

For each word quad (pixels of the network input):

* probability target: the quad shrunk by D = A (1 - r^2) / L (r = 0.4; A area, L perimeter) with pyclipper;
  don't-care (``###``) words and words shorter than ``min_height`` are masked out of the loss instead;
* threshold target: inside the quad dilated by D, 1 - (distance to the quad's nearest edge) / D, clipped to [0, 1]
  and mapped to [0.3, 0.7]; its mask is the dilated quad;
* scale target (ours): log2(word height / canonical height) on the word's pixels, word height = short side of its
  minimum-area rectangle, masked to care words. The network thus learns how far each word is from the height the
  fine pass wants.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyclipper

SHRINK_RATIO = 0.4
THRESH_MIN, THRESH_MAX = 0.3, 0.7


@dataclass
class Targets:
    prob: np.ndarray  # (H, W) float32 0/1: shrunk text kernels
    prob_mask: np.ndarray  # (H, W) float32: 0 on don't-care and too-small words
    thresh: np.ndarray
    thresh_mask: np.ndarray
    scale: np.ndarray  # (H, W) float32 log2(height / canonical)
    scale_mask: np.ndarray

    def stacked(self) -> np.ndarray:
        return np.stack(
            [self.prob, self.prob_mask, self.thresh, self.thresh_mask, self.scale, self.scale_mask]
        )


def quad_height(quad: np.ndarray) -> float:
    """Short side of the minimum-area rectangle around the quad (its text height)."""
    (_, _), (w, h), _ = cv2.minAreaRect(np.asarray(quad, dtype=np.float32))
    return float(min(w, h))


def offset_polygon(poly: np.ndarray, distance: float) -> list[np.ndarray]:
    """The polygon grown (distance > 0) or shrunk (< 0) by ``distance`` px, rounded corners (pyclipper)."""
    offset = pyclipper.PyclipperOffset()
    offset.AddPath(
        [tuple(p) for p in np.round(poly).astype(np.int64)], pyclipper.JT_ROUND, pyclipper.ET_CLOSEDPOLYGON
    )
    return [np.array(p, dtype=np.float64) for p in offset.Execute(distance)]


def _shrink_distance(poly: np.ndarray, ratio: float = SHRINK_RATIO) -> float:
    area = abs(cv2.contourArea(poly.astype(np.float32)))
    perimeter = cv2.arcLength(poly.astype(np.float32), True)
    return 0.0 if perimeter == 0 else area * (1 - ratio**2) / perimeter


def _segment_distance(xs: np.ndarray, ys: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance of every point (xs, ys) to the segment a-b."""
    ab = b - a
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / max(float(ab @ ab), 1e-6), 0, 1)
    return np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))


def _draw_border(poly: np.ndarray, distance: float, thresh: np.ndarray, mask: np.ndarray) -> None:
    grown = offset_polygon(poly, distance)
    if not grown:
        return
    cv2.fillPoly(mask, [np.round(grown[0]).astype(np.int32)], 1.0)
    h, w = thresh.shape
    x0, y0 = np.clip(np.floor(grown[0].min(0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(grown[0].max(0)).astype(int), 0, [w - 1, h - 1])
    if x1 < x0 or y1 < y0:
        return
    ys, xs = np.mgrid[y0 : y1 + 1, x0 : x1 + 1].astype(np.float64)
    dist = np.min(
        [_segment_distance(xs, ys, poly[i], poly[(i + 1) % len(poly)]) for i in range(len(poly))], axis=0
    )
    value = 1 - np.clip(dist / distance, 0, 1)
    region = thresh[y0 : y1 + 1, x0 : x1 + 1]
    np.maximum(region, value, out=region)


def make_targets(
    shape: tuple[int, int],
    quads: np.ndarray,
    care: np.ndarray,
    canonical_height: float,
    min_height: float = 3.0,
) -> Targets:
    """Targets for one input of ``shape`` (H, W) with word ``quads`` (N, 4, 2) and ``care`` flags (N,)."""
    h, w = shape
    prob = np.zeros(shape, np.float32)
    prob_mask = np.ones(shape, np.float32)
    thresh = np.zeros(shape, np.float32)
    thresh_mask = np.zeros(shape, np.float32)
    scale = np.zeros(shape, np.float32)
    scale_mask = np.zeros(shape, np.float32)
    for quad, is_care in zip(np.asarray(quads, dtype=np.float64).reshape(-1, 4, 2), care, strict=True):
        if quad[:, 0].max() < 0 or quad[:, 1].max() < 0 or quad[:, 0].min() >= w or quad[:, 1].min() >= h:
            continue
        pts = np.round(quad).astype(np.int32)
        height = quad_height(quad)
        if not is_care or height < min_height:
            cv2.fillPoly(prob_mask, [pts], 0.0)
            continue
        distance = _shrink_distance(quad)
        shrunk = offset_polygon(quad, -distance)
        if not shrunk:
            cv2.fillPoly(prob_mask, [pts], 0.0)
            continue
        cv2.fillPoly(prob, [np.round(shrunk[0]).astype(np.int32)], 1.0)
        _draw_border(quad, distance, thresh, thresh_mask)
        cv2.fillPoly(scale, [pts], float(np.log2(height / canonical_height)))
        cv2.fillPoly(scale_mask, [pts], 1.0)
    thresh = thresh * (THRESH_MAX - THRESH_MIN) + THRESH_MIN
    return Targets(prob, prob_mask, thresh, thresh_mask, scale, scale_mask)
