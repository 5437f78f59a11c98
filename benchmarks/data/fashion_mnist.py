"""Fashion-MNIST (Xiao et al. 2017): 70k 28x28 greyscale images of clothing in 10 classes."""

from __future__ import annotations

import gzip
import os
import shutil
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from .packages import DebianPackage, SourceMissingError
from .source import Source, register

if TYPE_CHECKING:
    import torch

CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
PACKAGE_DIR = "usr/share/datasets/fashion-mnist"
IDX_UBYTE = 0x08  # IDX type code of unsigned bytes, the only one Fashion-MNIST uses


def _idx_shape(f) -> tuple[int, ...]:
    # IDX header: two zero bytes, the element type, the number of dims, then each dim as a big-endian int32.
    zero, kind, ndim = struct.unpack(">HBB", f.read(4))
    if zero != 0 or kind != IDX_UBYTE or ndim not in (1, 3):
        raise ValueError(f"not an unsigned-byte IDX file (header {zero:#x} {kind:#x} {ndim})")
    return struct.unpack(f">{ndim}I", f.read(4 * ndim))


def read_idx(path: Path) -> torch.Tensor:
    """Read a gzipped IDX file (the MNIST format) into a uint8 tensor of its shape."""
    import torch  # here, not at the top: `effinfer-data list`/`fetch` should not pay torch's import time

    with gzip.open(path, "rb") as f:
        shape = _idx_shape(f)
        data = bytearray(f.read())
    expected = 1
    for dim in shape:
        expected *= dim
    if len(data) != expected:
        raise ValueError(f"{path}: {len(data)} bytes of data, header says {shape}")
    return torch.frombuffer(data, dtype=torch.uint8).view(shape)


@register
class FashionMNIST(Source):
    name = "fashion-mnist"
    description = "Fashion-MNIST, 60k train / 10k test 28x28 images, 10 classes"
    package = DebianPackage("dataset-fashion-mnist")
    licence = "MIT"
    size = "30 MB"
    canonical_urls = tuple(
        f"https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/{f}"
        for pair in FILES.values()
        for f in pair
    )

    def install(self, tree: Path, out: Path) -> None:
        for filename in (f for pair in FILES.values() for f in pair):
            src = self.member(tree, f"{PACKAGE_DIR}/{filename}")
            try:  # check the header now, so a wrong file is refused at fetch time, not at first use
                with gzip.open(src, "rb") as f:
                    _idx_shape(f)
            except (OSError, ValueError) as e:
                raise SourceMissingError(f"{src.name} is not a gzipped IDX file: {e}") from e
            shutil.copyfile(src, out / filename)


def load_fashion_mnist(
    split: Literal["train", "test"] = "train", data_dir: str | os.PathLike[str] | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as uint8 [N, 28, 28] and labels as int64 [N] (class names in `CLASSES`)."""
    if split not in FILES:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    folder = FashionMNIST().require(data_dir)
    images_file, labels_file = FILES[split]
    images, labels = read_idx(folder / images_file), read_idx(folder / labels_file).long()
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"{folder}: {images.shape[0]} images but {labels.shape[0]} labels in {split}")
    return images, labels
