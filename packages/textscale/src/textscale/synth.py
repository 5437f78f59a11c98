"""SynthText-like scene text: words in real fonts rendered onto real photographs, with word and line quads.

Each image is a photo (cropped and resized to ``long_side``) with several lines of words, each line in one font,
colour and size, placed without overlap and warped by a random rotation and perspective. A word's quad is the
warped rectangle around its *ink* (measured on the rendered mask, not taken from font metrics), so it lies on the
pixels drawn. Text heights run log-uniformly from a few pixels to a large part of the image; a word below
``legible_px`` or with little contrast against the photo under it is marked ``###`` (don't care), as ICDAR does.

Splits never share fonts or photos: the test split takes the families in ``TEST_FAMILIES`` and every fourth photo.
Everything is drawn from ``numpy.random.default_rng([seed, split, index])``: the same seed gives the same images.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from effinfer_core.atomic import atomic_dir
from effinfer_core.run_folder import inputs_hash
from textscale.icdar import DONT_CARE, format_boxes

TEST_FAMILIES = ("P052", "URWGothic")  # a serif and a sans family the training split never sees
SPLITS = ("train", "test")
WORDS = (
    "the of and to in is for on with as by at from that this are was be or an it not have all new more "
    "open exit sale stop park city road street hotel coffee bank station north south east west free entry "
    "only next left right push pull welcome market garden museum theatre bakery pharmacy police taxi bus "
    "today menu price total special fresh fruit bread wine beer pizza sushi closed daily parking floor level "
    "office school library centre service repair books music store gallery airport platform tickets"
).split()


@dataclass(frozen=True)
class SynthConfig:
    long_side: int = 2000
    lines: tuple[int, int] = (3, 10)  # lines per image, inclusive
    words_per_line: tuple[int, int] = (1, 4)
    min_height_px: float = 4.0  # word ink height, at the output resolution
    max_height_frac: float = 0.22  # of the image's short side
    legible_px: float = 7.0  # words lower than this are don't care
    min_contrast: float = 40.0  # |text luminance - background luminance| below this: don't care
    max_rotation_deg: float = 25.0
    perspective: float = 0.08  # corner jitter as a fraction of the line size
    jpeg_quality: int = 92


@dataclass
class SynthImage:
    image: np.ndarray  # H x W x 3 uint8 RGB
    words: np.ndarray  # (N, 4, 2) float, clockwise from top-left
    word_texts: list[str]  # transcription, or ### for don't care
    lines: np.ndarray  # (M, 4, 2): the rectangle around each line's word quads
    line_texts: list[str]


def split_fonts(fonts: list[Path], split: str) -> list[Path]:
    test = [f for f in fonts if f.name.startswith(TEST_FAMILIES)]
    chosen = test if split == "test" else [f for f in fonts if f not in test]
    if not chosen:
        raise ValueError(f"no {split} fonts among {len(fonts)} (test families: {', '.join(TEST_FAMILIES)})")
    return chosen


def split_backgrounds(photos: list[Path], split: str) -> list[Path]:
    chosen = [p for i, p in enumerate(sorted(photos)) if (i % 4 == 3) == (split == "test")]
    if not chosen:
        raise ValueError(f"no {split} photos among {len(photos)}; give at least 4")
    return chosen


def _background(path: Path, rng: np.random.Generator, long_side: int) -> np.ndarray:
    """A random crop of 60-100% of the photo, resized so that its long side is ``long_side``."""
    with Image.open(path) as im:
        photo = im.convert("RGB")
    w, h = photo.size
    frac = rng.uniform(0.6, 1.0)
    cw, ch = int(w * frac), int(h * frac)
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    scale = long_side / max(cw, ch)
    size = (max(1, round(cw * scale)), max(1, round(ch * scale)))
    return np.asarray(photo.crop((x0, y0, x0 + cw, y0 + ch)).resize(size, Image.Resampling.BILINEAR))


def _render_line(words: list[str], font_path: Path, height: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Alpha mask of one line of words and each word's ink rectangle (4, 2) in the mask's coordinates."""
    # The font size that gives roughly `height` px of ink for mixed-case words; ink is measured afterwards.
    font = ImageFont.truetype(str(font_path), max(4, round(height * 1.3)))
    space = font.getlength(" ")
    pad = int(height) + 4
    widths = [font.getlength(w) for w in words]
    width = int(sum(widths) + space * (len(words) - 1)) + 2 * pad
    mask = Image.new("L", (width, int(height * 2.2) + 2 * pad), 0)
    draw = ImageDraw.Draw(mask)
    rects, x = [], float(pad)
    for word, w in zip(words, widths, strict=True):
        word_mask = Image.new("L", mask.size, 0)
        ImageDraw.Draw(word_mask).text((x, pad), word, font=font, fill=255)
        ys, xs = np.nonzero(np.asarray(word_mask) > 127)
        if len(xs):
            x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
            rects.append(np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64))
        draw.text((x, pad), word, font=font, fill=255)
        x += w + space
    return np.asarray(mask), rects


def _homography(size: tuple[int, int], rng: np.random.Generator, cfg: SynthConfig) -> np.ndarray:
    """Rotation about the line's centre and a perspective jitter of its corners (no translation yet)."""
    w, h = size
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    jitter = rng.uniform(-cfg.perspective, cfg.perspective, size=(4, 2)) * np.array([w, h]) * [1, 0.5]
    angle = np.deg2rad(rng.uniform(-cfg.max_rotation_deg, cfg.max_rotation_deg) * rng.choice([0.3, 1.0]))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (src - [w / 2, h / 2] + jitter) @ rot.T
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    return cv2.perspectiveTransform(points.reshape(-1, 1, 2).astype(np.float64), matrix).reshape(-1, 2)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    return rgb[..., 0] * 0.299 + rgb[..., 1] * 0.587 + rgb[..., 2] * 0.114


def render_image(
    background: Path, fonts: list[Path], rng: np.random.Generator, cfg: SynthConfig = SynthConfig()
) -> SynthImage:
    image = _background(background, rng, cfg.long_side).astype(np.float32)
    ih, iw = image.shape[:2]
    occupied = np.zeros((ih, iw), dtype=bool)
    words_out: list[np.ndarray] = []
    texts_out: list[str] = []
    lines_out: list[np.ndarray] = []
    line_texts: list[str] = []
    n_lines = int(rng.integers(cfg.lines[0], cfg.lines[1] + 1))
    lo, hi = np.log(cfg.min_height_px), np.log(max(cfg.min_height_px + 1, cfg.max_height_frac * min(ih, iw)))
    for _ in range(n_lines):
        height = float(np.exp(rng.uniform(lo, hi)))
        words = [str(rng.choice(WORDS)) for _ in range(int(rng.integers(*cfg.words_per_line, endpoint=True)))]
        words = [
            w.upper() if rng.random() < 0.25 else w.capitalize() if rng.random() < 0.3 else w for w in words
        ]
        mask, rects = _render_line(words, fonts[int(rng.integers(len(fonts)))], height)
        if len(rects) != len(words):
            continue
        matrix = _homography((mask.shape[1], mask.shape[0]), rng, cfg)
        corners = _warp_points(
            np.array([[0, 0], [mask.shape[1], 0], mask.shape[::-1], [0, mask.shape[0]]]), matrix
        )
        span = corners.max(0) - corners.min(0)
        if span[0] >= iw or span[1] >= ih:
            continue
        for _attempt in range(10):  # a free spot for the line, else drop it
            offset = rng.uniform([0, 0], [iw - span[0], ih - span[1]]) - corners.min(0)
            placed = np.array([[1, 0, offset[0]], [0, 1, offset[1]], [0, 0, 1]]) @ matrix
            quads = [_warp_points(r, placed) for r in rects]
            region = np.zeros((ih, iw), dtype=np.uint8)
            cv2.fillPoly(
                region,
                [
                    np.round(np.vstack(quads)).astype(np.int32)[
                        cv2.convexHull(
                            np.round(np.vstack(quads)).astype(np.int32), returnPoints=False
                        ).ravel()
                    ]
                ],
                1,
            )
            if not (occupied & region.astype(bool)).any():
                break
        else:
            continue
        warped = cv2.warpPerspective(mask, placed, (iw, ih), flags=cv2.INTER_LINEAR)
        alpha: np.ndarray = warped.astype(np.float32) / 255
        if height > 12 and rng.random() < 0.3:  # soften: print and camera blur
            alpha = cv2.GaussianBlur(alpha, (3, 3), 0)
        under = image[region.astype(bool)].mean(0)
        colour: np.ndarray = rng.uniform(0, 255, 3)
        if rng.random() < 0.85:  # mostly readable: push the colour away from the background's luminance
            target = 20.0 if _luminance(under) > 128 else 235.0
            colour = colour * 0.35 + target * 0.65
        opacity = rng.uniform(0.75, 1.0)
        image = (image * (1 - alpha[..., None] * opacity) + colour * alpha[..., None] * opacity).astype(
            np.float32
        )
        occupied |= cv2.dilate(region, np.ones((5, 5), np.uint8)).astype(bool)
        faint = abs(_luminance(colour) - _luminance(under)) * opacity < cfg.min_contrast
        for word, quad in zip(words, quads, strict=True):
            side = min(np.linalg.norm(quad[1] - quad[0]), np.linalg.norm(quad[3] - quad[0]))
            words_out.append(quad)
            texts_out.append(DONT_CARE if faint or side < cfg.legible_px else word)
        rect = cv2.boxPoints(cv2.minAreaRect(np.vstack(quads).astype(np.float32)))
        lines_out.append(order_clockwise(rect))
        line_texts.append(
            DONT_CARE
            if all(texts_out[-len(words) + i] == DONT_CARE for i in range(len(words)))
            else " ".join(words)
        )
    return SynthImage(
        np.clip(image, 0, 255).astype(np.uint8),
        np.array(words_out).reshape(-1, 4, 2),
        texts_out,
        np.array(lines_out).reshape(-1, 4, 2),
        line_texts,
    )


def order_clockwise(quad: np.ndarray) -> np.ndarray:
    """Corners as top-left, top-right, bottom-right, bottom-left (clockwise in image coordinates)."""
    quad = np.asarray(quad, dtype=np.float64).reshape(4, 2)
    centre = quad.mean(0)
    angles = np.arctan2(quad[:, 1] - centre[1], quad[:, 0] - centre[0])
    quad = quad[np.argsort(angles)]  # clockwise on screen, starting near the left
    start = int(np.argmin(quad.sum(1)))  # top-left: smallest x + y
    return np.roll(quad, -start, axis=0)


def generate_split(
    out: str | os.PathLike[str],
    split: str,
    count: int,
    fonts: list[Path],
    backgrounds: list[Path],
    seed: int = 0,
    cfg: SynthConfig = SynthConfig(),
) -> Path:
    """Write ``count`` images of one split in ICDAR15 layout (``img_N.jpg``, ``gt_img_N.txt`` with word quads,
    ``lines/gt_img_N.txt`` with line quads), as one folder that appears whole or not at all."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    fonts, backgrounds = split_fonts(fonts, split), split_backgrounds(backgrounds, split)
    out = Path(out)
    with atomic_dir(out) as tmp:
        (tmp / "lines").mkdir()
        for n in range(1, count + 1):
            rng = np.random.default_rng([seed, SPLITS.index(split), n])
            sample = render_image(backgrounds[int(rng.integers(len(backgrounds)))], fonts, rng, cfg)
            Image.fromarray(sample.image).save(tmp / f"img_{n}.jpg", quality=cfg.jpeg_quality)
            (tmp / f"gt_img_{n}.txt").write_text(format_boxes(np.round(sample.words), sample.word_texts))
            (tmp / "lines" / f"gt_img_{n}.txt").write_text(
                format_boxes(np.round(sample.lines), sample.line_texts)
            )
        (tmp / "config.txt").write_text(f"seed={seed} split={split} count={count} {asdict(cfg)}\n")
    return out


def dataset_key(counts: dict[str, int], seed: int, cfg: SynthConfig) -> str:
    """The name of a generated data set's folder: the hash of everything that decides its content."""
    return inputs_hash({"counts": counts, "seed": seed, "config": asdict(cfg), "version": 1})[:12]
