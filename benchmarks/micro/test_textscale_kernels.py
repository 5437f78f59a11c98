"""TextScale's CPU-side hot path: packing the text regions into one canvas (MaxRects) and the DB post-processing
(binarise, contours, min-area rectangles, unclip, score) of a probability map."""

import numpy as np
import pytest

pipeline = pytest.importorskip("textscale.pipeline", reason="the textscale package is not installed")
postprocess = pytest.importorskip("textscale.postprocess")


def test_pack_200_regions(benchmark):
    rng = np.random.default_rng(0)
    sizes = [(int(w), 32) for w in rng.integers(40, 600, size=200)]  # word crops at the canonical height

    def pack():
        slots = [pipeline.Slot(crop=(0, 0, w, h), size=(w, h)) for w, h in sizes]
        return pipeline.pack(slots, gap=4)

    width, height = benchmark(pack)
    assert width > 0 and height > 0


def test_db_postprocess_1024(benchmark):
    rng = np.random.default_rng(0)
    prob = np.zeros((1024, 1024), np.float32)
    for _ in range(150):  # text-line-shaped blobs
        x, y, w, h = rng.integers(0, 900), rng.integers(0, 1000), rng.integers(20, 120), rng.integers(6, 20)
        prob[y : y + h, x : x + w] = 0.9
    boxes = benchmark(postprocess.boxes_from_maps, prob)
    assert len(boxes.scores) > 50
