"""The generator: quads on the rendered text, deterministic, splits without shared fonts or photos, ICDAR layout."""

from __future__ import annotations

import cv2
import numpy as np

from textscale.icdar import read_boxes, read_ground_truth
from textscale.synth import _background, render_image, split_backgrounds, split_fonts

from .conftest import TINY


def _render(fonts, backgrounds, seed):
    photo = split_backgrounds(backgrounds, "train")[0]
    bg = _background(photo, np.random.default_rng(seed), TINY.long_side).astype(np.int16)
    sample = render_image(photo, split_fonts(fonts, "train"), np.random.default_rng(seed), TINY)
    return bg, sample


def test_quads_lie_on_the_rendered_text(fonts, backgrounds):
    for seed in (0, 1, 2):
        bg, sample = _render(fonts, backgrounds, seed)
        assert len(sample.words) > 0 and sample.image.shape == bg.shape
        changed = np.abs(sample.image.astype(np.int16) - bg).max(-1) > 25
        inside = np.zeros(changed.shape, np.uint8)
        for quad in sample.words:
            cv2.fillPoly(inside, [np.round(quad).astype(np.int32)], 1)
            # each word's quad is a real area with drawn pixels in it
            quad_mask = np.zeros_like(inside)
            cv2.fillPoly(quad_mask, [np.round(quad).astype(np.int32)], 1)
            assert cv2.contourArea(quad.astype(np.float32)) > 4
            assert changed[quad_mask.astype(bool)].any()
        inside = cv2.dilate(inside, np.ones((5, 5), np.uint8)).astype(bool)  # anti-aliased edges, blur
        assert changed.sum() > 0
        assert changed[inside].sum() / changed.sum() > 0.97


def test_line_quads_cover_their_words(fonts, backgrounds):
    _, sample = _render(fonts, backgrounds, 4)
    assert len(sample.lines) >= 1
    lines = [cv2.convexHull(q.astype(np.float32)) for q in sample.lines]
    for quad in sample.words:
        centre = tuple(float(v) for v in quad.mean(0))
        assert any(cv2.pointPolygonTest(line, centre, False) >= 0 for line in lines)


def test_same_seed_same_image_other_seed_other_image(fonts, backgrounds):
    a, b, c = (_render(fonts, backgrounds, s)[1] for s in (7, 7, 8))
    assert np.array_equal(a.image, b.image) and np.array_equal(a.words, b.words)
    assert not np.array_equal(a.image, c.image)


def test_splits_share_no_fonts_or_photos(fonts, backgrounds):
    assert not set(split_fonts(fonts, "train")) & set(split_fonts(fonts, "test"))
    assert not set(split_backgrounds(backgrounds, "train")) & set(split_backgrounds(backgrounds, "test"))
    assert split_fonts(fonts, "test") and split_backgrounds(backgrounds, "test")


def test_small_words_are_dont_care(fonts, backgrounds):
    texts = []
    for seed in range(4):
        _, sample = _render(fonts, backgrounds, seed)
        for quad, text in zip(sample.words, sample.word_texts, strict=True):
            side = min(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0]))
            if side < TINY.legible_px:
                assert text == "###"
            texts.append(text)
    assert any(t != "###" for t in texts)


def test_written_split_reads_back_in_icdar_layout(tiny_split):
    gt = read_ground_truth(tiny_split)
    assert list(gt) == ["img_1", "img_2", "img_3", "img_4"]
    assert sum(len(v) for v in gt.values()) > 0
    assert all((tiny_split / "lines" / f"gt_{name}.txt").is_file() for name in gt)
    lines = read_boxes(tiny_split / "lines" / "gt_img_1.txt")
    assert all(b.points.shape == (4, 2) for b in lines)
