"""The ICDAR 2015 (Robust Reading Challenge 4) text-localisation protocol, as its official ``script.py`` defines it.

Files: one ``gt_img_N.txt`` / ``res_img_N.txt`` per image ``img_N.jpg``, one quadrilateral a line,
``x1,y1,x2,y2,x3,y3,x4,y4[,transcription]`` (MLT adds a script column before the transcription). The rules (the official script with ``rrc_evaluation_funcs``):

* coordinates are read as integers (we truncate, so a float result file is accepted, not refused);
* a ground truth whose transcription is ``###`` is *don't care*; a detection is don't care when its intersection
  with a don't-care box, divided by the detection's own area, is > 0.5 -- it then counts neither way;
* matching is greedy first-fit in file order (ground truths outer, detections inner), one-to-one, a pair matching
  when both are unmatched, neither is don't care and IoU > 0.5 (strict);
* precision = matches / care detections, recall = matches / care ground truths, both pooled over all images, and
  hmean = 2PR / (P + R).

Polygons go through shapely; a self-intersecting quad is repaired with ``make_valid`` (the official script's
Polygon3 library measures such shapes differently; they do not occur in well-formed files).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from shapely.geometry import Polygon
from shapely.validation import make_valid

from effinfer_core.atomic import write_atomic

DONT_CARE = "###"
IOU_CONSTRAINT = 0.5
AREA_PRECISION_CONSTRAINT = 0.5
HEIGHT_BINS = (0.0, 8.0, 16.0, 32.0, 64.0, float("inf"))  # recall per text-height bin (px, short side)
# the script column of ICDAR MLT ground truth (2017/2019), between the coordinates and the transcription
MLT_SCRIPTS = frozenset(
    ("Latin", "Arabic", "Chinese", "Japanese", "Korean", "Bangla", "Hindi", "Symbols", "Mixed", "None")
)
IMAGE_NAME = re.compile(r"^img_(\d+)\.(jpg|jpeg|png)$", re.IGNORECASE)


class IcdarFormatError(ValueError):
    """A ground-truth or result file that does not follow the ICDAR 2015 layout; the message names file and line."""


@dataclass
class TextBox:
    """One quadrilateral (4, 2) in pixels, clockwise in image coordinates, and its transcription (may be empty)."""

    points: np.ndarray
    text: str = ""

    @property
    def dont_care(self) -> bool:
        return self.text == DONT_CARE


def parse_line(line: str, where: str = "") -> TextBox:
    """``x1,y1,...,x4,y4[,transcription]`` (the transcription may itself hold commas)."""
    parts = line.strip().lstrip("\ufeff").split(",")
    if len(parts) < 8:
        raise IcdarFormatError(
            f"{where}: expected 8 coordinates x1,y1,...,x4,y4[,text], got {line.strip()!r}"
        )
    try:
        coords = [int(float(v)) for v in parts[:8]]  # the official script reads integers: truncate
    except ValueError:
        raise IcdarFormatError(f"{where}: coordinates must be numbers, got {line.strip()!r}") from None
    text = ",".join(parts[8:]).strip()
    if len(parts) == 9 and _is_number(parts[8]):
        text = ""  # a result line's confidence, not a transcription
    elif len(parts) >= 10 and parts[8].strip() in MLT_SCRIPTS:
        text = ",".join(parts[9:]).strip()  # ICDAR MLT: x1,...,y4,script,transcription
    return TextBox(np.array(coords, dtype=np.float64).reshape(4, 2), text)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_boxes(path: str | os.PathLike[str]) -> list[TextBox]:
    """All boxes of one ``gt_img_N.txt`` or ``res_img_N.txt`` (UTF-8, with or without a byte-order mark)."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8-sig").splitlines()
    return [parse_line(line, f"{path}:{i + 1}") for i, line in enumerate(lines) if line.strip()]


def format_boxes(quads: Iterable[np.ndarray], texts: Sequence[str] | None = None) -> str:
    """The file content for quads (N, 4, 2): integer coordinates, transcriptions appended where given."""
    lines = []
    for i, quad in enumerate(quads):
        coords = ",".join(str(int(v)) for v in np.asarray(quad).reshape(8))
        lines.append(coords + (f",{texts[i]}" if texts is not None else ""))
    return "".join(line + "\n" for line in lines)


def write_boxes(
    path: str | os.PathLike[str], quads: Iterable[np.ndarray], texts: Sequence[str] | None = None
) -> None:
    write_atomic(Path(path), format_boxes(quads, texts))


def image_stem(image_path: str | os.PathLike[str]) -> str:
    """``img_12.jpg`` -> ``img_12``: the name its ``gt_`` and ``res_`` files are keyed by."""
    return Path(image_path).stem


def list_images(folder: str | os.PathLike[str]) -> list[Path]:
    """The ``img_N`` images of an ICDAR15-layout folder, in numeric order."""
    found = [p for p in Path(folder).iterdir() if IMAGE_NAME.match(p.name)]
    return sorted(found, key=lambda p: int(IMAGE_NAME.match(p.name).group(1)))  # type: ignore[union-attr]


def read_ground_truth(folder: str | os.PathLike[str]) -> dict[str, list[TextBox]]:
    """``{image stem: boxes}`` for every ``img_N`` image of a folder that has its ``gt_img_N.txt`` beside it."""
    folder = Path(folder)
    out = {}
    for image in list_images(folder):
        gt = folder / f"gt_{image.stem}.txt"
        if not gt.is_file():
            raise IcdarFormatError(f"{image} has no ground truth {gt.name} beside it")
        out[image.stem] = read_boxes(gt)
    return out


def read_results(folder: str | os.PathLike[str], stems: Iterable[str]) -> dict[str, list[TextBox]]:
    """Detections per image; an image without a ``res_`` file has none (as the official script treats it)."""
    folder = Path(folder)
    return {
        s: read_boxes(folder / f"res_{s}.txt") if (folder / f"res_{s}.txt").is_file() else [] for s in stems
    }


def polygon(points: np.ndarray) -> Polygon:
    poly = Polygon(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    if not poly.is_valid:
        poly = make_valid(poly)
    return poly


def box_height(points: np.ndarray) -> float:
    """A quad's text height: the short side of its minimum-area rectangle."""
    rect = polygon(points).minimum_rotated_rectangle
    xy = np.asarray(rect.exterior.coords)[:4] if hasattr(rect, "exterior") else np.zeros((4, 2))
    sides = np.linalg.norm(np.diff(np.vstack([xy, xy[:1]]), axis=0), axis=1)
    return float(sides.min()) if len(sides) else 0.0


@dataclass
class ImageResult:
    matches: int
    care_gt: int
    care_det: int
    matched_gt: list[int]  # indices of the matched ground truths
    care_gt_index: list[int]  # indices of the care ground truths
    det_dont_care: list[int]

    @property
    def precision(self) -> float:
        return 1.0 if self.care_det == 0 and self.care_gt == 0 else _ratio(self.matches, self.care_det)

    @property
    def recall(self) -> float:
        return 1.0 if self.care_gt == 0 else _ratio(self.matches, self.care_gt)


def _ratio(a: int, b: int) -> float:
    return 0.0 if b == 0 else a / b


def evaluate_image(gt: Sequence[TextBox], det: Sequence[TextBox | np.ndarray]) -> ImageResult:
    gt_polys = [polygon(b.points) for b in gt]
    det_polys = [polygon(d.points if isinstance(d, TextBox) else d) for d in det]
    gt_dont_care = [i for i, b in enumerate(gt) if b.dont_care]
    det_dont_care = []
    if gt_dont_care:
        for j, dp in enumerate(det_polys):
            for i in gt_dont_care:
                area = dp.area
                if area > 0 and gt_polys[i].intersection(dp).area / area > AREA_PRECISION_CONSTRAINT:
                    det_dont_care.append(j)
                    break
    gt_taken = [False] * len(gt)
    det_taken = [False] * len(det)
    matched = []
    for i, gp in enumerate(gt_polys):
        for j, dp in enumerate(det_polys):
            if gt_taken[i] or det_taken[j] or i in gt_dont_care or j in det_dont_care:
                continue
            inter = gp.intersection(dp).area
            union = gp.area + dp.area - inter
            if union > 0 and inter / union > IOU_CONSTRAINT:
                gt_taken[i] = det_taken[j] = True
                matched.append(i)
    care = [i for i in range(len(gt)) if i not in gt_dont_care]
    return ImageResult(len(matched), len(care), len(det) - len(det_dont_care), matched, care, det_dont_care)


@dataclass
class Metrics:
    precision: float
    recall: float
    hmean: float
    matches: int
    care_gt: int
    care_det: int
    per_image: dict[str, ImageResult] = field(default_factory=dict)
    recall_by_height: dict[str, float] = field(default_factory=dict)
    gt_by_height: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, float]:
        out = {"precision": self.precision, "recall": self.recall, "hmean": self.hmean}
        out.update({f"recall_h{k}": v for k, v in self.recall_by_height.items()})
        return out


def bin_label(lo: float, hi: float) -> str:
    return f"{int(lo)}-{int(hi)}" if np.isfinite(hi) else f"{int(lo)}+"


def evaluate(
    gt: Mapping[str, Sequence[TextBox]],
    det: Mapping[str, Sequence[TextBox | np.ndarray]],
    height_bins: Sequence[float] = HEIGHT_BINS,
) -> Metrics:
    """Pooled precision, recall, hmean over all images of ``gt`` (a missing detection entry = no detections), and
    recall per ground-truth height bin (care boxes only)."""
    unknown = sorted(set(det) - set(gt))
    if unknown:
        raise IcdarFormatError(f"detections for images without ground truth: {', '.join(unknown[:5])}")
    per_image = {name: evaluate_image(boxes, det.get(name, [])) for name, boxes in gt.items()}
    matches = sum(r.matches for r in per_image.values())
    care_gt = sum(r.care_gt for r in per_image.values())
    care_det = sum(r.care_det for r in per_image.values())
    precision, recall = _ratio(matches, care_det), _ratio(matches, care_gt)
    hmean = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    hit = np.zeros(len(height_bins) - 1)
    total = np.zeros(len(height_bins) - 1)
    for name, r in per_image.items():
        for i in r.care_gt_index:
            k = int(np.searchsorted(height_bins, box_height(gt[name][i].points), side="right")) - 1
            k = min(max(k, 0), len(total) - 1)
            total[k] += 1
            hit[k] += i in r.matched_gt
    labels = [bin_label(lo, hi) for lo, hi in zip(height_bins[:-1], height_bins[1:], strict=True)]
    by_height = {lab: float(h / t) for lab, h, t in zip(labels, hit, total, strict=True) if t > 0}
    counts = {lab: int(t) for lab, t in zip(labels, total, strict=True)}
    return Metrics(precision, recall, hmean, matches, care_gt, care_det, per_image, by_height, counts)


def evaluate_folders(gt_dir: str | os.PathLike[str], res_dir: str | os.PathLike[str]) -> Metrics:
    """Score a folder of ``res_img_N.txt`` against an ICDAR15-layout folder of images and ground truths."""
    gt = read_ground_truth(gt_dir)
    if not gt:
        raise IcdarFormatError(f"{gt_dir} has no img_N.jpg/png images with gt_img_N.txt files")
    return evaluate(gt, read_results(res_dir, gt))
