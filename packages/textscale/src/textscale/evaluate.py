"""Score inference variants on an ICDAR15-layout folder: ICDAR 2015 P/R/hmean, recall per text height, images/s,
pixels processed per image, and the time of each pipeline step.

Variants: ``adaptive`` (the paper's two passes), ``fixed-<long side>`` (one pass), ``oracle`` (ground-truth regions
at their true heights: what perfect coarse predictions would give).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effinfer_core.atomic import write_atomic
from textscale.icdar import TextBox, evaluate, list_images, read_boxes, write_boxes
from textscale.predictor import Page, TextDetector, read_image


@dataclass
class TestImage:
    stem: str
    path: Path
    words: list[TextBox]
    lines: list[TextBox] | None  # line ground truth where the folder has lines/gt_img_N.txt


def load_test_set(folder: str | os.PathLike[str], limit: int | None = None) -> list[TestImage]:
    folder = Path(folder)
    images = list_images(folder) if folder.is_dir() else []
    if not images:
        raise FileNotFoundError(
            f"{folder} holds no img_N.jpg/png images with gt_img_N.txt: give an ICDAR15-layout folder, or run "
            "`textscale data` to generate the profile's test split"
        )
    out = []
    for path in images[:limit]:
        line_file = folder / "lines" / f"gt_{path.stem}.txt"
        lines = read_boxes(line_file) if line_file.is_file() else None
        out.append(TestImage(path.stem, path, read_boxes(folder / f"gt_{path.stem}.txt"), lines))
    return out


def care_quads(boxes: Sequence[TextBox]) -> np.ndarray:
    return np.array([b.points for b in boxes if not b.dont_care], dtype=np.float64).reshape(-1, 4, 2)


def run_variant(
    name: str,
    detect: Callable[[np.ndarray, TestImage], Page],
    test_set: Sequence[TestImage],
    out_dir: str | os.PathLike[str] | None = None,
    lines: bool = False,
    warmup: bool = True,
) -> dict[str, Any]:
    """Detect on every image, score against word (or, with ``lines``, line) ground truth; write ``res_img_N.txt``
    files and ``metrics.json`` to ``out_dir/name`` when given."""
    detections: dict[str, list[np.ndarray]] = {}
    seconds, pixels = [], []
    if warmup and test_set:  # one untimed call first: allocator and kernel set-up are not per-image costs
        detect(read_image(test_set[0].path), test_set[0])
    steps: dict[str, float] = {}
    for item in test_set:
        image = read_image(item.path)
        start = time.perf_counter()
        page = detect(image, item)
        seconds.append(time.perf_counter() - start)
        pixels.append(page.result.pixels)
        for step, value in page.result.timings.items():
            steps[step] = steps.get(step, 0.0) + value / len(test_set)
        detections[item.stem] = list(page.polygons)
        if out_dir is not None:
            write_boxes(Path(out_dir) / name / f"res_{item.stem}.txt", page.polygons)
    gt = {}
    for item in test_set:
        truth = item.lines if lines else item.words
        if truth is None:
            raise FileNotFoundError(f"no line ground truth (lines/gt_{item.stem}.txt) for {item.path}")
        gt[item.stem] = truth
    metrics = evaluate(gt, detections)
    report = {
        "variant": name,
        **metrics.as_dict(),
        "images": len(test_set),
        "images_per_s": len(test_set) / max(sum(seconds), 1e-9),
        "seconds_per_image": float(np.mean(seconds)),
        "megapixels_per_image": float(np.mean(pixels)) / 1e6,
        "step_seconds": steps,
        "gt_by_height": metrics.gt_by_height,
    }
    if out_dir is not None:
        write_atomic(Path(out_dir) / name / "metrics.json", json.dumps(report, indent=2) + "\n")
    return report


def variants(
    detector: TextDetector,
    long_sides: Sequence[int],
    names: Sequence[str] | None = None,
    oracle_lines: bool = False,
) -> list[tuple[str, Callable[[np.ndarray, TestImage], Page]]]:
    """(name, detect function) for adaptive, oracle (ground-truth words, or lines with ``oracle_lines``) and each
    fixed long side; ``names`` picks some."""
    from dataclasses import replace

    def oracle(image: np.ndarray, item: TestImage) -> Page:
        truth = item.lines if oracle_lines and item.lines is not None else item.words
        return detector.detect_oracle(image, care_quads(truth))

    out: list[tuple[str, Callable[[np.ndarray, TestImage], Page]]] = [
        ("adaptive", lambda image, item: detector.detect(image)),
        ("oracle", oracle),
    ]
    for side in long_sides:
        fixed = TextDetector(
            detector.net, detector.adaptive.canonical_height, "fixed", side, post=detector.post
        )
        fixed.adaptive = replace(detector.adaptive)
        out.append((f"fixed-{side}", _whole_image(fixed)))
    if names:
        unknown = set(names) - {n for n, _ in out}
        if unknown:
            raise ValueError(f"unknown variants {sorted(unknown)}; known: {', '.join(n for n, _ in out)}")
        out = [(n, fn) for n, fn in out if n in names]
    return out


def _whole_image(detector: TextDetector) -> Callable[[np.ndarray, TestImage], Page]:
    def detect(image: np.ndarray, item: TestImage) -> Page:
        return detector.detect(image)

    return detect


def format_table(reports: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'variant':<12} {'P':>6} {'R':>6} {'hmean':>6} {'MP/img':>7} {'s/img':>7}"]
    for r in reports:
        lines.append(
            f"{r['variant']:<12} {r['precision']:6.3f} {r['recall']:6.3f} {r['hmean']:6.3f} "
            f"{r['megapixels_per_image']:7.3f} {r['seconds_per_image']:7.2f}"
        )
    return "\n".join(lines)


def map_diagnostics(
    net: torch.nn.Module,
    folder: str | os.PathLike[str],
    canonical_height: float,
    crop: int = 256,
    count: int = 16,
    seed: int = 0,
) -> dict[str, float]:
    """Pixel-level progress of a network on seeded random crops of a labelled folder: mean probability on text
    kernels and on background, and the scale channel's mean absolute error (log2 units) on care-word pixels,
    beside that of always predicting 0 (the canonical height). Shows learning long before boxes appear."""
    from textscale.data import TextCrops, load_samples

    crops = TextCrops(load_samples(folder), crop, canonical_height, seed=seed)
    x = torch.stack([crops[i][0] for i in range(count)])
    y = torch.stack([crops[i][1] for i in range(count)])
    with torch.inference_mode():
        out = net.eval()(x)
    prob, scale = out[:, 0], out[:, 1]
    kernel, care, words = y[:, 0] > 0, y[:, 1] > 0, y[:, 5] > 0
    return {
        "prob_text": float(prob[kernel].mean()) if kernel.any() else float("nan"),
        "prob_background": float(prob[~kernel & care].mean()),
        "scale_mae": float((scale - y[:, 4])[words].abs().mean()) if words.any() else float("nan"),
        "scale_mae_constant": float(y[:, 4][words].abs().mean()) if words.any() else float("nan"),
    }
