"""The PP-OCRv4 anchor finds the generator's lines; the bench tasks are registered with the harness."""

from __future__ import annotations

from benchmarks.registry import discover_tasks
from textscale.evaluate import load_test_set, run_variant
from textscale.pipeline import detect_fixed
from textscale.ppocr import PPOCR_POST, PPOCRNet
from textscale.predictor import Page


def test_ppocr_anchor_finds_lines(tiny_split):
    net = PPOCRNet(threads=1)
    test_set = load_test_set(tiny_split)

    def detect(image, item) -> Page:
        result = detect_fixed(net, image, 640, PPOCR_POST)
        return Page(result.boxes.quads, result.boxes.scores, result)

    report = run_variant("ppocr", detect, test_set, lines=True)
    # a wrong colour order or normalisation leaves PP-OCR blind; with rapidocr's it finds most lines
    assert report["recall"] > 0.3 and report["precision"] > 0.3
    assert report["megapixels_per_image"] > 0


def test_tasks_are_registered():
    found, errors = discover_tasks()
    assert "textscale" not in errors
    names = {t.name for t in found}
    assert {"textscale.scales", "textscale.ppocr"} <= names


def test_ppocr_on_the_packed_canvas_finds_the_lines_mapped_back(tiny_split):
    # ground-truth line regions at 24 px, packed, one PP-OCR pass on the canvas, boxes mapped back: if any step of
    # crop-resize-pack-map were off, the boxes would miss their lines
    from textscale.evaluate import care_quads
    from textscale.pipeline import AdaptiveConfig, detect_oracle

    net = PPOCRNet(threads=1)

    def detect(image, item) -> Page:
        result = detect_oracle(net, image, care_quads(item.lines), AdaptiveConfig(), PPOCR_POST)
        return Page(result.boxes.quads, result.boxes.scores, result)

    report = run_variant("oracle", detect, load_test_set(tiny_split), lines=True)
    assert report["recall"] > 0.6 and report["precision"] > 0.6
