"""Packing, the crop-resize-pack mapping, DB post-processing and the two-pass pipeline with a rule-based "network"."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from textscale.icdar import TextBox, evaluate
from textscale.pipeline import (
    AdaptiveConfig,
    Slot,
    build_canvas,
    detect_adaptive,
    detect_fixed,
    detect_oracle,
    map_back,
    pack,
)
from textscale.postprocess import Boxes, PostConfig, boxes_from_maps, polygon_nms

CANONICAL = 24.0


def _slots(rng, n=40):
    slots = []
    for _ in range(n):
        x0, y0 = rng.integers(0, 1500, 2)
        w, h = rng.integers(5, 400), rng.integers(5, 200)
        f = float(rng.uniform(0.1, 2.0))
        slots.append(
            Slot((int(x0), int(y0), int(x0 + w), int(y0 + h)), (max(1, round(w * f)), max(1, round(h * f))))
        )
    return slots


def test_pack_places_every_region_inside_without_overlap():
    rng = np.random.default_rng(0)
    slots = _slots(rng)
    gap = 6
    width, height = pack(slots, gap)
    assert width % 32 == 0 and height % 32 == 0
    occupied = np.zeros((height, width), np.int32)
    for s in slots:
        x, y = s.place
        assert x >= 0 and y >= 0 and x + s.size[0] <= width and y + s.size[1] <= height
        occupied[y : y + s.size[1] + gap, x : x + s.size[0] + gap] += 1
    assert occupied.max() == 1  # slots and their gaps never overlap
    # compact: the canvas is not much larger than the packed area
    assert width * height < 2.5 * sum((s.size[0] + gap) * (s.size[1] + gap) for s in slots)


def test_mapping_back_inverts_crop_resize_pack_exactly():
    rng = np.random.default_rng(1)
    slots = _slots(rng, 20)
    pack(slots, 4)
    for s in slots:
        x0, y0, x1, y1 = s.crop
        pts = rng.uniform([x0, y0], [x1, y1], size=(8, 2))
        np.testing.assert_allclose(s.to_image(s.to_canvas(pts)), pts, rtol=0, atol=1e-9)
        quad = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)
        on_canvas = s.to_canvas(quad)
        # the crop's corners land on the slot's corners
        np.testing.assert_allclose(on_canvas[0], s.place)
        np.testing.assert_allclose(on_canvas[2], np.add(s.place, s.size))
    # map_back assigns each canvas box to the slot its centre lies in
    s = slots[3]
    x0, y0, x1, y1 = s.crop
    quad = np.array([[x0 + 1, y0 + 1], [x1 - 1, y0 + 1], [x1 - 1, y1 - 1], [x0 + 1, y1 - 1]], float)
    back = map_back(Boxes(s.to_canvas(quad)[None], np.ones(1), np.zeros(1)), slots)
    np.testing.assert_allclose(back.quads[0], quad, atol=1e-9)


def test_canvas_holds_the_resized_crops():
    image = np.random.default_rng(2).integers(0, 255, (300, 400, 3), dtype=np.uint8)
    slots = [Slot((10, 20, 110, 70), (100, 50)), Slot((200, 100, 260, 130), (120, 60))]
    size = pack(slots, 8)
    canvas = build_canvas(image, slots, size)
    s = slots[0]  # factor 1: an exact copy
    assert np.array_equal(
        canvas[s.place[1] : s.place[1] + 50, s.place[0] : s.place[0] + 100], image[20:70, 10:110]
    )


def _rect(x0, y0, x1, y1):
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], float)


def test_db_postprocess_finds_blobs_and_drops_weak_ones():
    prob = np.zeros((100, 200), np.float32)
    prob[20:40, 30:130] = 0.9
    prob[60:70, 150:190] = 0.35  # above the binarisation threshold, below the box threshold
    boxes = boxes_from_maps(prob, np.full_like(prob, 0.5), PostConfig(unclip_ratio=1.5))
    assert len(boxes) == 1 and boxes.scores[0] == pytest.approx(0.9, abs=0.02)
    assert boxes.scales[0] == 0.5
    q = boxes.quads[0]
    # unclipped: grown beyond the kernel by about A * 1.5 / L = 2000 * 1.5 / 240 = 12.5 px on each side
    assert q[:, 0].min() == pytest.approx(30 - 12.5, abs=2) and q[:, 1].max() == pytest.approx(
        39 + 12.5, abs=2
    )


def test_polygon_nms_keeps_the_best_of_duplicates():
    quads = np.stack(
        [_rect(0, 0, 100, 20), _rect(2, 1, 101, 21), _rect(200, 0, 300, 20), _rect(10, 2, 40, 18)]
    )
    kept = polygon_nms(Boxes(quads, np.array([0.7, 0.9, 0.8, 0.6]), np.zeros(4)))
    assert sorted(kept.scores.tolist()) == [0.8, 0.9]  # the part-word inside the whole is a duplicate too


def rule_net(image: np.ndarray):
    """A stand-in network that is exact by construction: text = bright pixels, scale = log2(blob height / 24)."""
    text = (image.mean(-1) > 0.5).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(text)
    scale = np.zeros(text.shape, np.float32)
    for i in range(1, n):
        scale[labels == i] = np.log2(max(stats[i, cv2.CC_STAT_HEIGHT], 1) / CANONICAL)
    return text.astype(np.float32), scale


def _scene():
    image = np.zeros((1500, 2000, 3), np.uint8)
    words = [
        _rect(100, 100, 400, 112),
        _rect(600, 300, 700, 311),
        _rect(900, 900, 1700, 1100),
        _rect(50, 1300, 350, 1330),
    ]
    for q in words:
        image[int(q[0, 1]) : int(q[2, 1]), int(q[0, 0]) : int(q[2, 0])] = 255
    return image, words


def test_adaptive_pipeline_recovers_words_in_image_coordinates():
    image, words = _scene()
    post = PostConfig(unclip_ratio=0.01, box_thresh=0.5, min_size=1)
    cfg = AdaptiveConfig(canonical_height=CANONICAL, coarse_long_side=512, keep_height=40)
    result = detect_adaptive(rule_net, image, cfg, post)
    gt = {"img_1": [TextBox(q, "w") for q in words]}
    metrics = evaluate(gt, {"img_1": list(result.boxes.quads)})
    assert metrics.recall == 1.0 and metrics.precision == 1.0
    # the small words were too small to be kept from the coarse pass and went through the canvas at ~canonical height
    assert len(result.slots) >= 1 and result.canvas is not None
    assert result.pixels < 0.5 * image.shape[0] * image.shape[1]
    assert {"coarse_net", "regions", "pack", "canvas", "fine_net", "fine_post", "merge"} <= set(
        result.timings
    )
    # at the coarse scale alone (and the final minimum size) the small words are lost
    coarse = detect_fixed(rule_net, image, 512, post)
    assert evaluate(gt, {"img_1": list(coarse.boxes.quads)}).recall < 1.0


def test_oracle_pipeline_uses_ground_truth_regions():
    image, words = _scene()
    post = PostConfig(unclip_ratio=0.01, box_thresh=0.5, min_size=1)
    result = detect_oracle(rule_net, image, np.stack(words), AdaptiveConfig(canonical_height=CANONICAL), post)
    metrics = evaluate({"img_1": [TextBox(q, "w") for q in words]}, {"img_1": list(result.boxes.quads)})
    assert metrics.recall == 1.0 and metrics.precision == 1.0


def test_image_without_text_gives_empty_result():
    image = np.zeros((600, 800, 3), np.uint8)
    result = detect_adaptive(rule_net, image)
    assert len(result.boxes) == 0 and result.slots == []


def test_canvas_budget_shrinks_all_regions_together():
    from textscale.pipeline import limit_canvas

    slots = [Slot((0, 0, 1000, 1000), (2000, 2000)), Slot((0, 0, 100, 50), (200, 100))]
    limit_canvas(slots, 1_000_000)
    assert sum(s.size[0] * s.size[1] for s in slots) <= 1_000_000
    assert slots[0].size[0] == pytest.approx(2 * slots[1].size[0] * 5, rel=0.02)  # same factor for both
    back = slots[1].to_image(slots[1].to_canvas(np.array([[10.0, 20.0]])))
    np.testing.assert_allclose(back, [[10.0, 20.0]])


def test_scale_from_coarse_box_heights_for_a_net_without_scale_channel():
    image, words = _scene()

    def no_scale_net(x):
        prob, _ = rule_net(x)
        return prob, np.zeros_like(prob)  # a scale channel that says nothing

    post = PostConfig(unclip_ratio=0.01, box_thresh=0.5, min_size=1)
    gt = {"img_1": [TextBox(q, "w") for q in words]}
    box_cfg = AdaptiveConfig(canonical_height=CANONICAL, keep_height=40, scale_source="box")
    result = detect_adaptive(no_scale_net, image, box_cfg, post)
    assert evaluate(gt, {"img_1": list(result.boxes.quads)}).recall == 1.0
    # with the scale channel read as "already canonical", the small words are not enlarged: they stay lost
    flat = detect_adaptive(
        no_scale_net, image, AdaptiveConfig(canonical_height=CANONICAL, keep_height=40), post
    )
    assert evaluate(gt, {"img_1": list(flat.boxes.quads)}).recall < 1.0
    with pytest.raises(ValueError, match="scale_source"):
        detect_adaptive(no_scale_net, image, AdaptiveConfig(scale_source="guess"), post)
