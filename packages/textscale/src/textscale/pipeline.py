"""The paper's two-pass inference, and the fixed-scale and oracle-scale variants it is compared with.

Adaptive (Richardson et al. 2020, steps as the abstract gives them; every threshold here is ours):

1. **coarse**: the image resized to ``coarse_long_side`` -> network -> DB boxes, each with the median predicted
   scale s = log2(height in the coarse input / canonical height);
2. **regions**: a box whose coarse height is already >= ``keep_height`` px is kept from the coarse pass; every other
   becomes a region of the full-resolution image (its box padded by ``pad`` heights), to be resized by
   r = canonical / (canonical * 2^s / f) = f / 2^s (f = coarse resize factor) so that its text gets the canonical
   height; overlapping regions of similar scale are merged;
3. **pack**: the resized regions go into one canvas with MaxRects (``rectpack``, best short-side fit, no rotation),
   ``gap`` px apart, canvas sides multiples of 32;
4. **fine**: network on the canvas -> DB boxes; a box counts for the slot its centre lies in and is mapped back by
   x = (x_canvas - slot_x) / r_x + crop_x;
5. **merge**: coarse-kept and fine boxes, duplicates removed by polygon-IoU NMS.

Each step is timed separately; pixels processed = coarse input + canvas (what the network sees).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import cv2
import numpy as np
import rectpack

from textscale.postprocess import DEFAULT_POST, Boxes, PostConfig, boxes_from_maps, polygon_nms

# a network call: float32 RGB (H, W, 3) in [0, 1] -> (probability map, scale map), both (H, W)
NetFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
ALIGN = 32


@dataclass(frozen=True)
class AdaptiveConfig:
    canonical_height: float = 24.0
    coarse_long_side: int = 512
    keep_height: float = 32.0  # coarse boxes at least this high (coarse px) are final
    pad: float = 0.5  # region padding, in predicted text heights
    gap: int = 8  # px between slots on the canvas
    max_zoom: float = 2.0  # never enlarge a full-resolution crop more than this
    merge_scale_diff: float = 1.0  # merge overlapping regions whose scales differ by less (log2 units)
    nms_iou: float = 0.3
    max_canvas_side: int = 4096
    coarse_min_size: float = 0.0  # the coarse pass proposes regions: keep boxes too thin for a final answer
    # regions are shrunk together to fit this (a confused coarse map can ask for a lot)
    max_canvas_pixels: int = 4_000_000
    # where a coarse box's text height comes from: "predicted" (the scale channel, the paper's way) or "box" (the
    # short side of the coarse box itself: lets a detector without a scale channel, e.g. PP-OCR, run the pipeline)
    scale_source: str = "predicted"
    # the coarse pass only proposes regions, so it may take weaker evidence than a final box (None: as the final)
    coarse_thresh: float | None = None
    coarse_box_thresh: float | None = None


@dataclass
class Slot:
    """One region: a crop (x0, y0, x1, y1) of the full image, resized to (w, h) and placed at (cx, cy)."""

    crop: tuple[int, int, int, int]
    size: tuple[int, int]
    scale: float = 0.0  # predicted log2 scale (for merging)
    place: tuple[int, int] = (0, 0)

    @property
    def factors(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.crop
        return self.size[0] / (x1 - x0), self.size[1] / (y1 - y0)

    def to_canvas(self, points: np.ndarray) -> np.ndarray:
        rx, ry = self.factors
        return (points - [self.crop[0], self.crop[1]]) * [rx, ry] + self.place

    def to_image(self, points: np.ndarray) -> np.ndarray:
        rx, ry = self.factors
        return (points - self.place) / [rx, ry] + [self.crop[0], self.crop[1]]

    def contains(self, point: np.ndarray) -> bool:
        return bool(
            self.place[0] <= point[0] < self.place[0] + self.size[0]
            and self.place[1] <= point[1] < self.place[1] + self.size[1]
        )


@dataclass
class Result:
    boxes: Boxes
    timings: dict[str, float] = field(default_factory=dict)  # seconds per step
    pixels: int = 0  # pixels the network processed
    coarse_prob: np.ndarray | None = None
    canvas: np.ndarray | None = None
    slots: list[Slot] = field(default_factory=list)


def _align(value: float) -> int:
    return int(np.ceil(value / ALIGN) * ALIGN)


def resize_long(image: np.ndarray, long_side: int) -> tuple[np.ndarray, float]:
    """Resize (H, W, 3) so that its long side is ``long_side``; returns the image and the factor."""
    h, w = image.shape[:2]
    f = long_side / max(h, w)
    size = (max(1, round(w * f)), max(1, round(h * f)))
    interpolation = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
    return cv2.resize(image, size, interpolation=interpolation), f


def to_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float32) / 255


def detect_fixed(net: NetFn, image: np.ndarray, long_side: int, post: PostConfig = DEFAULT_POST) -> Result:
    """The baseline: one pass at a fixed input size (long side ``long_side``), boxes in image pixels."""
    t: dict[str, float] = {}
    start = time.perf_counter()
    small, f = resize_long(image, long_side)
    x = to_float(small)
    t["resize"] = time.perf_counter() - start
    start = time.perf_counter()
    prob, scale = net(x)
    t["net"] = time.perf_counter() - start
    start = time.perf_counter()
    boxes = boxes_from_maps(prob, scale, post)
    boxes.quads = boxes.quads / f
    t["post"] = time.perf_counter() - start
    return Result(boxes, t, pixels=_align(small.shape[0]) * _align(small.shape[1]), coarse_prob=prob)


def regions_from_boxes(
    boxes: Boxes, heights: np.ndarray, factors: np.ndarray, image_shape: tuple[int, ...], cfg: AdaptiveConfig
) -> list[Slot]:
    """Slots for full-resolution quads ``boxes.quads`` with text heights ``heights`` (full-res px), each resized by
    ``factors``; padded, clipped to the image, overlapping ones of similar scale merged."""
    h, w = image_shape[:2]
    rects = []
    for quad, height, factor in zip(boxes.quads, heights, factors, strict=True):
        pad = cfg.pad * height
        x0, y0 = np.floor(quad.min(0) - pad).astype(int)
        x1, y1 = np.ceil(quad.max(0) + pad).astype(int)
        rects.append([max(0, x0), max(0, y0), min(w, x1), min(h, y1), float(np.log2(factor))])  # box, log2 r
    merged = True
    while merged:  # merge until no two overlapping rects of similar scale remain
        merged = False
        for i in range(len(rects)):
            for j in range(i + 1, len(rects)):
                a, b = rects[i], rects[j]
                overlap = a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
                if overlap and abs(a[4] - b[4]) < cfg.merge_scale_diff:
                    area_a, area_b = (a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1])
                    log_factor = (a[4] * area_a + b[4] * area_b) / max(area_a + area_b, 1)
                    rects[i] = [
                        min(a[0], b[0]),
                        min(a[1], b[1]),
                        max(a[2], b[2]),
                        max(a[3], b[3]),
                        log_factor,
                    ]
                    del rects[j]
                    merged = True
                    break
            if merged:
                break
    slots = []
    for x0, y0, x1, y1, log_factor in rects:
        if x1 - x0 < 1 or y1 - y0 < 1:
            continue
        factor = 2.0**log_factor
        size = (max(1, round((x1 - x0) * factor)), max(1, round((y1 - y0) * factor)))
        slots.append(Slot((int(x0), int(y0), int(x1), int(y1)), size, log_factor))
    return slots


def limit_canvas(slots: list[Slot], max_pixels: int) -> list[Slot]:
    """Shrink every slot by one factor when together they would cover more than ``max_pixels``."""
    area = sum(s.size[0] * s.size[1] for s in slots)
    if area <= max_pixels:
        return slots
    shrink = float(np.sqrt(max_pixels / area))
    for s in slots:
        s.size = (max(1, int(s.size[0] * shrink)), max(1, int(s.size[1] * shrink)))
    return slots


def pack(slots: list[Slot], gap: int, max_side: int = 4096) -> tuple[int, int]:
    """Place every slot on one canvas (MaxRects, best short-side fit); sets ``slot.place``; returns (W, H)."""
    if not slots:
        return 0, 0
    area = sum((s.size[0] + gap) * (s.size[1] + gap) for s in slots)
    widest = max(s.size[0] for s in slots) + gap
    width = min(max(_align(widest), _align(np.sqrt(area) * 1.15)), max(_align(widest), max_side))
    height = sum(s.size[1] + gap for s in slots) + ALIGN  # tall enough that everything fits; trimmed below
    packer = rectpack.newPacker(rotation=False, pack_algo=rectpack.MaxRectsBssf)
    for i, s in enumerate(slots):
        packer.add_rect(s.size[0] + gap, s.size[1] + gap, rid=i)
    packer.add_bin(width, height)
    packer.pack()
    placed = packer.rect_list()
    if len(placed) != len(slots):
        raise RuntimeError(f"packing placed {len(placed)} of {len(slots)} regions")
    for _, x, y, _, _, rid in placed:
        slots[rid].place = (int(x), int(y))
    used = max(s.place[1] + s.size[1] for s in slots)
    return width, _align(used)


def build_canvas(image: np.ndarray, slots: list[Slot], size: tuple[int, int]) -> np.ndarray:
    canvas = np.zeros((size[1], size[0], 3), dtype=image.dtype)
    for s in slots:
        x0, y0, x1, y1 = s.crop
        crop = image[y0:y1, x0:x1]
        interpolation = cv2.INTER_AREA if s.size[0] < (x1 - x0) else cv2.INTER_LINEAR
        canvas[s.place[1] : s.place[1] + s.size[1], s.place[0] : s.place[0] + s.size[0]] = cv2.resize(
            crop, s.size, interpolation=interpolation
        )
    return canvas


def map_back(boxes: Boxes, slots: list[Slot]) -> Boxes:
    """Canvas boxes -> image boxes: each box belongs to the slot its centre lies in (others are dropped)."""
    keep, quads = [], []
    for i, quad in enumerate(boxes.quads):
        centre = quad.mean(0)
        slot = next((s for s in slots if s.contains(centre)), None)
        if slot is not None:
            keep.append(i)
            quads.append(slot.to_image(quad))
    kept = boxes.select(np.array(keep, dtype=int))
    kept.quads = np.array(quads).reshape(-1, 4, 2)
    return kept


def fine_pass(
    net: NetFn,
    image: np.ndarray,
    slots: list[Slot],
    cfg: AdaptiveConfig,
    post: PostConfig,
    t: dict[str, float],
) -> tuple[Boxes, np.ndarray, int]:
    """Pack the slots, run the network on the canvas, map boxes back: (boxes, canvas, canvas pixels)."""
    if not slots:
        return Boxes.empty(), np.zeros((0, 0, 3), np.uint8), 0
    start = time.perf_counter()
    size = pack(slots, cfg.gap, cfg.max_canvas_side)
    t["pack"] = time.perf_counter() - start
    start = time.perf_counter()
    canvas = build_canvas(image, slots, size)
    t["canvas"] = time.perf_counter() - start
    start = time.perf_counter()
    prob, scale = net(to_float(canvas))
    t["fine_net"] = time.perf_counter() - start
    start = time.perf_counter()
    boxes = map_back(boxes_from_maps(prob, scale, post), slots)
    t["fine_post"] = time.perf_counter() - start
    return boxes, canvas, canvas.shape[0] * canvas.shape[1]


def _sides(quad: np.ndarray) -> tuple[float, float]:
    return float(np.linalg.norm(quad[1] - quad[0])), float(np.linalg.norm(quad[3] - quad[0]))


def detect_adaptive(
    net: NetFn, image: np.ndarray, cfg: AdaptiveConfig = AdaptiveConfig(), post: PostConfig = DEFAULT_POST
) -> Result:
    coarse_post = replace(
        post,
        min_size=cfg.coarse_min_size,
        thresh=post.thresh if cfg.coarse_thresh is None else cfg.coarse_thresh,
        box_thresh=post.box_thresh if cfg.coarse_box_thresh is None else cfg.coarse_box_thresh,
    )
    coarse = detect_fixed(net, image, cfg.coarse_long_side, coarse_post)
    t = {f"coarse_{k}": v for k, v in coarse.timings.items()}
    start = time.perf_counter()
    f = cfg.coarse_long_side / max(image.shape[:2])
    boxes = coarse.boxes
    if cfg.scale_source == "box":
        coarse_heights = np.array([min(_sides(q)) for q in boxes.quads]) * f  # quads are in image pixels
    elif cfg.scale_source == "predicted":
        coarse_heights = cfg.canonical_height * 2.0 ** np.nan_to_num(boxes.scales)
    else:
        raise ValueError(f"scale_source must be 'predicted' or 'box', got {cfg.scale_source!r}")
    canonical_heights = coarse_heights
    keep = coarse_heights >= cfg.keep_height
    kept = boxes.select(np.nonzero(keep)[0])
    final = [min(_sides(q)) >= post.min_size + 2 for q in kept.quads]  # kept boxes meet the final thresholds
    kept = kept.select(np.array(final, dtype=bool) & (kept.scores >= post.box_thresh))
    rest = boxes.select(np.nonzero(~keep)[0])
    full_heights = canonical_heights[~keep] / f
    factors = np.minimum(cfg.canonical_height / np.maximum(full_heights, 1e-3), cfg.max_zoom)
    slots = limit_canvas(
        regions_from_boxes(rest, full_heights, factors, image.shape, cfg), cfg.max_canvas_pixels
    )
    t["regions"] = time.perf_counter() - start
    fine, canvas, canvas_pixels = fine_pass(net, image, slots, cfg, post, t)
    start = time.perf_counter()
    merged = polygon_nms(Boxes.concat([kept, fine]), cfg.nms_iou)
    t["merge"] = time.perf_counter() - start
    return Result(merged, t, coarse.pixels + canvas_pixels, coarse.coarse_prob, canvas, slots)


def detect_oracle(
    net: NetFn,
    image: np.ndarray,
    gt_quads: np.ndarray,
    cfg: AdaptiveConfig = AdaptiveConfig(),
    post: PostConfig = DEFAULT_POST,
) -> Result:
    """The upper bound of the adaptive idea: regions and scales from the ground truth, one fine pass."""
    from textscale.targets import quad_height

    t: dict[str, float] = {}
    quads = np.asarray(gt_quads, dtype=np.float64).reshape(-1, 4, 2)
    heights = np.array([max(quad_height(q), 1.0) for q in quads])
    factors = np.minimum(cfg.canonical_height / heights, cfg.max_zoom)
    boxes = Boxes(quads, np.ones(len(quads)), np.zeros(len(quads)))
    slots = regions_from_boxes(boxes, heights, factors, image.shape, cfg)
    fine, canvas, pixels = fine_pass(net, image, slots, cfg, post, t)
    start = time.perf_counter()
    fine = polygon_nms(fine, cfg.nms_iou)
    t["merge"] = time.perf_counter() - start
    return Result(fine, t, pixels, None, canvas, slots)
