"""Training data: ICDAR15-layout folders (generated, or a real ICDAR15/MLT copy) as random crops with targets.

Each item is one image of the folder at a random zoom (log-uniform between "the whole image fits the crop" and
native resolution, so the net sees text at every height the coarse pass and the canvas will show it), a crop of
``crop`` px (centred on a random word most of the time, so crops are rarely empty), a brightness/contrast jitter,
and the targets of ``targets.make_targets``. Item ``i`` draws from ``default_rng([seed, i])``: the same seed gives
the same crops in the same order whatever the loader's workers.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from textscale.icdar import list_images, read_boxes
from textscale.targets import make_targets


class DataError(ValueError):
    """A data folder that cannot be used; the message says what is wrong and what to do."""


@dataclass
class Sample:
    image: Path
    quads: np.ndarray  # (N, 4, 2) at the image's full resolution
    care: np.ndarray  # (N,) bool


def load_samples(folder: str | os.PathLike[str]) -> list[Sample]:
    """Every ``img_N`` image of an ICDAR15-layout folder with its ``gt_img_N.txt`` word boxes."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder} is not a folder; give an ICDAR15-layout folder (img_N.jpg + gt_img_N.txt)")
    samples = []
    for image in list_images(folder):
        gt = folder / f"gt_{image.stem}.txt"
        if not gt.is_file():
            raise DataError(f"{image} has no ground truth {gt.name} beside it")
        boxes = read_boxes(gt)
        quads = np.array([b.points for b in boxes], dtype=np.float64).reshape(-1, 4, 2)
        samples.append(Sample(image, quads, np.array([not b.dont_care for b in boxes], dtype=bool)))
    if not samples:
        raise DataError(
            f"{folder} holds no img_N.jpg/png images; generate data with `textscale data` or point at an "
            "ICDAR15-layout folder"
        )
    return samples


def load_image(path: Path, scale: float = 1.0) -> tuple[np.ndarray, float]:
    """RGB uint8 at about ``scale`` x full resolution (JPEG decoded at a reduced size where it can be) and the
    scale actually applied."""
    with Image.open(path) as im:
        full = im.size
        if scale < 1:
            im.draft("RGB", (max(1, int(full[0] * scale)), max(1, int(full[1] * scale))))
        rgb = im.convert("RGB")
        size = (max(1, round(full[0] * scale)), max(1, round(full[1] * scale)))
        if rgb.size != size:
            rgb = rgb.resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb), size[0] / full[0]


class TextCrops(Dataset):
    def __init__(
        self,
        samples: list[Sample],
        crop: int,
        canonical_height: float,
        seed: int = 0,
        length: int | None = None,
    ):
        self.samples, self.crop, self.canonical_height, self.seed = samples, crop, canonical_height, seed
        self.length = length or len(samples)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, index])
        sample = self.samples[index % len(self.samples)]
        with Image.open(sample.image) as im:
            long_side = max(im.size)
        fit = min(1.0, self.crop / long_side)
        zoom = float(np.exp(rng.uniform(np.log(fit * 0.8), 0.0)))
        image, zoom = load_image(sample.image, zoom)
        quads = sample.quads * zoom
        h, w = image.shape[:2]
        if len(quads) and rng.random() < 0.8:  # centre on a word
            cx, cy = quads[int(rng.integers(len(quads)))].mean(0) + rng.normal(0, self.crop / 6, 2)
            x0, y0 = int(cx - self.crop / 2), int(cy - self.crop / 2)
        else:
            x0, y0 = (
                int(rng.integers(0, max(1, w - self.crop + 1))),
                int(rng.integers(0, max(1, h - self.crop + 1))),
            )
        x0, y0 = int(np.clip(x0, 0, max(0, w - self.crop))), int(np.clip(y0, 0, max(0, h - self.crop)))
        canvas = np.zeros((self.crop, self.crop, 3), np.float32)
        part = image[y0 : y0 + self.crop, x0 : x0 + self.crop].astype(np.float32) / 255
        canvas[: part.shape[0], : part.shape[1]] = part
        contrast, brightness = rng.uniform(0.7, 1.3), rng.uniform(-0.1, 0.1)
        canvas = np.clip((canvas - 0.5) * contrast + 0.5 + brightness, 0, 1)
        targets = make_targets((self.crop, self.crop), quads - [x0, y0], sample.care, self.canonical_height)
        return torch.from_numpy(canvas).permute(2, 0, 1).contiguous(), torch.from_numpy(targets.stacked())


class TextDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_dir: str | os.PathLike[str],
        crop: int = 320,
        batch_size: int = 8,
        canonical_height: float = 24.0,
        seed: int = 0,
        num_workers: int = 0,
        length: int = 10_000,
    ):
        super().__init__()
        self.train_dir, self.crop, self.batch_size = Path(train_dir), crop, batch_size
        self.canonical_height, self.seed, self.num_workers, self.length = (
            canonical_height,
            seed,
            num_workers,
            length,
        )
        self.dataset: TextCrops | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.dataset is None:
            samples = load_samples(self.train_dir)
            self.dataset = TextCrops(samples, self.crop, self.canonical_height, self.seed, self.length)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.dataset is not None
        generator = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.dataset,
            batch_size=self.batch_size,
            shuffle=True,
            generator=generator,
            num_workers=self.num_workers,
            drop_last=True,
            persistent_workers=self.num_workers > 0,
        )
