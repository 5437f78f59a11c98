"""PP-OCRv4's detector (the DB model that ``rapidocr-onnxruntime`` ships) as an anchor on the same test images.

It runs as a ``NetFn`` inside the same fixed-scale path as our baselines -- the same resize to a long side, padding
to 32 and timing -- with rapidocr's own pre- and post-processing settings: BGR input, (x / 255 - 0.5) / 0.5,
thresh 0.3, box_thresh 0.5, unclip 1.6, bitmap dilation. (rapidocr itself resizes each side to the nearest multiple
of 32 instead of padding, and picks the input size itself; we fix the size to compare at equal pixels.)
PP-OCR finds *lines*, not words: score it against the line ground truth (``lines/gt_img_N.txt``).
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import numpy as np

from textscale.pipeline import AdaptiveConfig
from textscale.postprocess import PostConfig
from textscale.predictor import TextDetector
from textscale.torch_model import STRIDE

PPOCR_POST = PostConfig(thresh=0.3, box_thresh=0.5, unclip_ratio=1.6, dilate=True)


class PPOCRNet:
    """A ``NetFn``: float RGB (H, W, 3) in [0, 1] -> (PP-OCRv4 probability map, zero scale map)."""

    def __init__(self, path: str | os.PathLike[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        if path is None:
            from benchmarks.data import ppocr_det_model

            path = ppocr_det_model()
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = image.shape[:2]
        x = np.zeros((1, 3, h + (-h) % STRIDE, w + (-w) % STRIDE), np.float32)
        x[0, :, :h, :w] = ((image[..., ::-1] - 0.5) / 0.5).transpose(
            2, 0, 1
        )  # RGB -> BGR, as PaddleOCR reads
        (prob,) = self.session.run(None, {self.input: x})
        prob = prob[0, 0, :h, :w]
        return prob, np.zeros_like(prob)


def ppocr_detector(inference: dict[str, Any] | None = None, threads: int | None = None) -> TextDetector:
    """PP-OCRv4 behind the predictor API: adaptive (a coarse box's height as its scale), oracle and fixed modes."""
    from textscale.predictor import adaptive_config

    adaptive = AdaptiveConfig(scale_source="box", keep_height=36.0)
    if inference is not None:
        adaptive = replace(adaptive_config(inference), scale_source="box", keep_height=36.0)
    return TextDetector(
        PPOCRNet(threads=threads), adaptive.canonical_height, adaptive=adaptive, post=PPOCR_POST
    )
