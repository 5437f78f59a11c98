"""DB post-processing (MhLiao/DB ``SegDetectorRepresenter``, boxes mode): probability map -> scored quads.

binarise P > ``thresh`` -> contours -> minimum-area rectangle (drop short side < ``min_size``) -> box score = mean P
inside the rectangle (drop < ``box_thresh``) -> unclip the rectangle by A * ``unclip_ratio`` / L (pyclipper) ->
minimum-area rectangle again (drop short side < ``min_size`` + 2). With a scale map, each box also gets the median
predicted scale over its kernel.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from textscale.targets import offset_polygon


@dataclass(frozen=True)
class PostConfig:
    thresh: float = 0.3
    box_thresh: float = 0.6
    unclip_ratio: float = 1.5
    min_size: float = 3.0
    max_candidates: int = 1000
    dilate: bool = False  # PaddleOCR's use_dilation: grow the bitmap by a 2x2 kernel before the contours


DEFAULT_POST = PostConfig()


@dataclass
class Boxes:
    quads: np.ndarray  # (N, 4, 2) float, clockwise from the top-left corner
    scores: np.ndarray  # (N,)
    scales: np.ndarray  # (N,) median predicted log2(height / canonical); NaN without a scale map

    @classmethod
    def empty(cls) -> Boxes:
        return cls(np.zeros((0, 4, 2)), np.zeros(0), np.zeros(0))

    def __len__(self) -> int:
        return len(self.scores)

    def select(self, keep: np.ndarray) -> Boxes:
        return Boxes(self.quads[keep], self.scores[keep], self.scales[keep])

    @staticmethod
    def concat(parts: list[Boxes]) -> Boxes:
        parts = [p for p in parts if len(p)]
        if not parts:
            return Boxes.empty()
        return Boxes(*(np.concatenate([getattr(p, f) for p in parts]) for f in ("quads", "scores", "scales")))


def order_quad(points: np.ndarray) -> np.ndarray:
    """A rectangle's corners as top-left, top-right, bottom-right, bottom-left."""
    pts = np.asarray(points, dtype=np.float64).reshape(4, 2)
    by_x = pts[np.argsort(pts[:, 0], kind="stable")]
    left, right = by_x[:2], by_x[2:]
    tl, bl = left[np.argsort(left[:, 1], kind="stable")]
    tr, br = right[np.argsort(right[:, 1], kind="stable")]
    return np.array([tl, tr, br, bl])


def _box_score(prob: np.ndarray, quad: np.ndarray) -> float:
    h, w = prob.shape
    x0, y0 = np.clip(np.floor(quad.min(0)).astype(int), 0, [w - 1, h - 1])
    x1, y1 = np.clip(np.ceil(quad.max(0)).astype(int), 0, [w - 1, h - 1])
    mask = np.zeros((y1 - y0 + 1, x1 - x0 + 1), np.uint8)
    cv2.fillPoly(mask, [np.round(quad - [x0, y0]).astype(np.int32)], 1)
    return float(cv2.mean(prob[y0 : y1 + 1, x0 : x1 + 1], mask)[0])


def boxes_from_maps(
    prob: np.ndarray, scale: np.ndarray | None = None, cfg: PostConfig = DEFAULT_POST
) -> Boxes:
    """Quads from a probability map (H, W) in [0, 1]; coordinates in the map's pixels."""
    bitmap: np.ndarray = (prob > cfg.thresh).astype(np.uint8)
    if cfg.dilate:
        bitmap = cv2.dilate(bitmap, np.ones((2, 2), np.uint8))
    contours, _ = cv2.findContours(bitmap, cv2.RETR_LIST, cv2.CHAIN_APPROX_SIMPLE)
    quads, scores, scales = [], [], []
    for contour in contours[: cfg.max_candidates]:
        rect = cv2.minAreaRect(contour)
        if min(rect[1]) < cfg.min_size:
            continue
        box = cv2.boxPoints(rect).astype(np.float64)
        score = _box_score(prob, box)
        if score < cfg.box_thresh:
            continue
        area, length = cv2.contourArea(box.astype(np.float32)), cv2.arcLength(box.astype(np.float32), True)
        grown = offset_polygon(box, area * cfg.unclip_ratio / max(length, 1e-6))
        if len(grown) != 1:
            continue
        rect = cv2.minAreaRect(grown[0].astype(np.float32))
        if min(rect[1]) < cfg.min_size + 2:
            continue
        quads.append(order_quad(cv2.boxPoints(rect)))
        scores.append(score)
        if scale is not None:
            kernel = np.zeros(prob.shape, np.uint8)
            cv2.drawContours(kernel, [contour], -1, 1, thickness=-1)
            scales.append(float(np.median(scale[kernel.astype(bool)])))
        else:
            scales.append(np.nan)
    if not quads:
        return Boxes.empty()
    return Boxes(np.array(quads), np.array(scores), np.array(scales))


def polygon_nms(boxes: Boxes, iou_threshold: float = 0.3) -> Boxes:
    """Keep the highest-scoring of every group of quads that overlap by IoU > ``iou_threshold`` (or where one lies
    mostly inside the other: a word found both whole and in part)."""
    from shapely.geometry import Polygon

    order = np.argsort(-boxes.scores, kind="stable")
    polys = [Polygon(q) for q in boxes.quads]
    keep: list[int] = []
    for i in order:
        pi = polys[i]
        if not pi.is_valid or pi.area <= 0:
            continue
        duplicate = False
        for j in keep:
            inter = pi.intersection(polys[j]).area
            if inter / (pi.area + polys[j].area - inter) > iou_threshold or inter / pi.area > 0.7:
                duplicate = True
                break
        if not duplicate:
            keep.append(int(i))
    return boxes.select(np.array(sorted(keep), dtype=int))
