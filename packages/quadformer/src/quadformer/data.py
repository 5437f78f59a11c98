"""Data: a cluttered classification set built from real data, plus ImageFolder folders and CIFAR for users.

*Clutter* (the benchmark set): one Fashion-MNIST item (20-36 px, tinted a random bright colour) pasted at a random
place on a random crop of a real photograph (Debian ``mate-backgrounds``), 128 px; optional distractors (tinted
fragments of other items, pasted under the item). The test split uses backgrounds never seen in training
(``TEST_BACKGROUNDS``) and Fashion-MNIST's test items. The object's ground-truth mask is kept beside each image for
the oracle scorer. It is generated once from a seed into the data cache (``<data root>/quadformer-clutter/<key>``,
an atomic folder keyed by the generation settings): ``quadformer data`` builds it.

A batch is a dict: ``image`` uint8 [B, 3, H, W], ``label`` int64 [B], and ``mask`` uint8 [B, H, W] where the set has
masks. Conversion to float and augmentation happen on the training device (``lightning_model.py``).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from benchmarks.data import background_photos, data_root, load_fashion_mnist
from effinfer_core.atomic import atomic_dir

FOLDER = "quadformer-clutter"
TEST_BACKGROUNDS = ("Dune", "Storm", "Wood")  # never seen in training
GENERATOR_VERSION = 2  # bump when the generation code changes what it draws (2: photos thumbnailed on load)
PHOTO_MAX_SIDE = 768


class DataError(ValueError):
    """Data that cannot be used as asked (missing folder, wrong layout); the message says what to do."""


@dataclass(frozen=True)
class ClutterSettings:
    train: int = 8000
    test: int = 2000
    size: int = 128
    item_min: int = 20
    item_max: int = 36
    distractors: int = 0  # up to this many distractor fragments per image
    seed: int = 0

    def __post_init__(self) -> None:
        if not 8 <= self.item_min <= self.item_max <= self.size:
            raise DataError(f"item sizes must satisfy 8 <= item_min <= item_max <= size, got {self}")
        if self.train < 1 or self.test < 1:
            raise DataError(f"train and test counts must be >= 1, got {self.train} and {self.test}")

    def key(self) -> str:
        text = json.dumps({**asdict(self), "version": GENERATOR_VERSION}, sort_keys=True)
        return f"s{self.size}-n{self.train}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def _load_photo(path: Path) -> Tensor:
    from PIL import Image

    with Image.open(path) as im:
        photo = im.convert("RGB")
    # the source keeps full resolution (TextScale renders 2000 px scenes); a 128 px crop needs no more than this
    photo.thumbnail((PHOTO_MAX_SIDE, PHOTO_MAX_SIDE), Image.Resampling.LANCZOS)
    return (
        torch.frombuffer(bytearray(photo.tobytes()), dtype=torch.uint8)
        .view(photo.height, photo.width, 3)
        .permute(2, 0, 1)
        .float()
        / 255
    )


def _resize(x: Tensor, h: int, w: int) -> Tensor:
    return F.interpolate(x.unsqueeze(0), size=(h, w), mode="bilinear", antialias=True, align_corners=False)[0]


def _randint(g: torch.Generator, lo: int, hi: int) -> int:
    """Uniform in [lo, hi] inclusive."""
    return int(torch.randint(lo, hi + 1, (1,), generator=g))


def _tint(g: torch.Generator) -> Tensor:
    colour = torch.rand(3, generator=g)
    return (colour / colour.max()).view(3, 1, 1)  # bright: the strongest channel at 1


def _paste(canvas: Tensor, alpha: Tensor, colour: Tensor, top: int, left: int) -> None:
    h, w = alpha.shape
    region = canvas[:, top : top + h, left : left + w]
    region.mul_(1 - alpha).add_(colour * alpha)


def _split(
    settings: ClutterSettings, split: str, data_dir: str | os.PathLike[str] | None
) -> dict[str, Tensor]:
    s, n = settings.size, settings.train if split == "train" else settings.test
    photos = [p for p in background_photos(data_dir) if (p.stem in TEST_BACKGROUNDS) == (split == "test")]
    backgrounds = [_load_photo(p) for p in photos]
    items, item_labels = load_fashion_mnist("train" if split == "train" else "test", data_dir)
    g = torch.Generator().manual_seed(settings.seed * 2 + (split == "test"))
    images = torch.empty(n, 3, s, s, dtype=torch.uint8)
    masks = torch.empty(n, s, s, dtype=torch.uint8)
    labels = torch.empty(n, dtype=torch.int64)
    for i in range(n):
        bg = backgrounds[_randint(g, 0, len(backgrounds) - 1)]
        side = _randint(g, s, max(s, min(bg.shape[1:]) // 2))  # a crop of 1-2.5x the output size
        top, left = _randint(g, 0, bg.shape[1] - side), _randint(g, 0, bg.shape[2] - side)
        canvas = _resize(bg[:, top : top + side, left : left + side], s, s)
        for _ in range(_randint(g, 0, settings.distractors)):
            other = items[_randint(g, 0, len(items) - 1)].float() / 255
            y, x, k = _randint(g, 0, 18), _randint(g, 0, 18), _randint(g, 8, 16)
            piece = _resize(other[y : y + 10, x : x + 10].unsqueeze(0), k, k)[0]
            _paste(canvas, piece, _tint(g), _randint(g, 0, s - k), _randint(g, 0, s - k))
        j = _randint(g, 0, len(items) - 1)
        k = _randint(g, settings.item_min, settings.item_max)
        alpha = _resize(items[j].float().unsqueeze(0) / 255, k, k)[0].clamp(0, 1)
        top, left = _randint(g, 0, s - k), _randint(g, 0, s - k)
        _paste(canvas, alpha, _tint(g), top, left)
        images[i] = (canvas * 255).round().clamp(0, 255).to(torch.uint8)
        masks[i] = 0
        masks[i, top : top + k, left : left + k] = (alpha > 0.2).to(torch.uint8)
        labels[i] = item_labels[j]
    return {"images": images, "labels": labels, "masks": masks}


def generate_clutter(
    settings: ClutterSettings,
    data_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] | None = None,
) -> Path:
    """The generated set's folder, generating it first when the cache does not have it (atomic: all or nothing)."""
    folder = data_root(data_dir) / FOLDER / settings.key()
    if (folder / "settings.json").is_file():
        return folder
    if log:
        log(
            f"generating the clutter set ({settings.train} train / {settings.test} test images) into {folder}"
        )
    threads = torch.get_num_threads()
    # one thread: the per-image ops are tiny, and on a shared 2-core CPU two threads ran this 14x slower
    torch.set_num_threads(1)
    try:
        with atomic_dir(folder) as tmp:
            for split in ("train", "test"):
                torch.save(_split(settings, split, data_dir), tmp / f"{split}.pt")
            (tmp / "settings.json").write_text(
                json.dumps({**asdict(settings), "version": GENERATOR_VERSION}) + "\n"
            )
    finally:
        torch.set_num_threads(threads)
    return folder


def has_maps(source: str) -> bool:
    """Whether a data source brings per-image maps (the clutter set's masks, or a folder's ``maps/``)."""
    kind, _, path = source.partition(":")
    return kind == "clutter" or (kind == "folder" and (Path(path) / "maps").is_dir())


class TensorImages(Dataset):
    """Images (uint8 [N, 3, H, W]) with labels and optional masks, as batch dicts."""

    def __init__(self, images: Tensor, labels: Tensor, masks: Tensor | None = None):
        self.images, self.labels, self.masks = images, labels, masks

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"image": self.images[i], "label": self.labels[i]}
        if self.masks is not None:
            item["mask"] = self.masks[i]
        return item


class _Folder(Dataset):
    """A torchvision data set of (PIL image, label) as uint8 batch dicts at one size; with ``maps`` (a folder that
    mirrors the split's class folders), each image's precomputed importance map (a greyscale image of the same
    name, any extension) comes along as ``mask``."""

    def __init__(self, base: Any, size: int, root: Path | None = None, maps: Path | None = None):
        self.base, self.size, self.root, self.maps = base, size, root, maps

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        from torchvision.transforms.functional import pil_to_tensor, resize

        image, label = self.base[i]
        image = pil_to_tensor(image.convert("RGB"))
        if tuple(image.shape[-2:]) != (self.size, self.size):
            image = resize(image, [self.size, self.size], antialias=True)
        item = {"image": image, "label": torch.tensor(label)}
        if self.maps is not None and self.root is not None:
            item["mask"] = self._map(Path(self.base.samples[i][0]))
        return item

    def _map(self, path: Path) -> Tensor:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor, resize

        assert self.maps is not None and self.root is not None
        relative = path.relative_to(self.root).with_suffix("")
        found = sorted(self.maps.glob(f"{relative}.*"))
        if not found:
            raise DataError(
                f"no importance map for {path} in {self.maps} (expected {relative}.png or similar)"
            )
        with Image.open(found[0]) as im:
            saliency = pil_to_tensor(im.convert("L"))
        return resize(saliency, [self.size, self.size], antialias=True)[0]


class ImageDataModule(L.LightningDataModule):
    """``clutter`` (generated), ``folder:PATH`` (PATH/train and PATH/test or PATH/val, one sub-folder per class;
    optional PATH/maps/ mirroring them with a greyscale importance map per image, for the oracle scorer),
    ``cifar10:PATH`` / ``cifar100:PATH`` (torchvision's layout under PATH; nothing is downloaded)."""

    def __init__(
        self,
        source: str = "clutter",
        clutter: ClutterSettings | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        batch_size: int = 64,
        image_size: int | None = None,
        num_workers: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        self.source, self.clutter, self.data_dir = source, clutter or ClutterSettings(), data_dir
        self.batch_size, self.num_workers, self.seed = batch_size, num_workers, seed
        kind = source.partition(":")[0]
        if kind not in ("clutter", "folder", "cifar10", "cifar100"):
            raise DataError(
                f"unknown data source {source!r}; use clutter, folder:PATH, cifar10:PATH or cifar100:PATH"
            )
        self.image_size = image_size or {"clutter": self.clutter.size, "folder": 224}.get(kind, 32)
        self.train_set: Dataset | None = None
        self.test_set: Dataset | None = None
        self.classes: list[str] = []

    @property
    def num_classes(self) -> int:
        if not self.classes:
            self.setup()
        return len(self.classes)

    @property
    def has_masks(self) -> bool:
        return has_maps(self.source)

    def prepare_data(self) -> None:
        if self.source == "clutter":
            generate_clutter(self.clutter, self.data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        kind, _, path = self.source.partition(":")
        if kind == "clutter":
            from benchmarks.data.fashion_mnist import CLASSES

            folder = generate_clutter(self.clutter, self.data_dir)
            splits = {s: torch.load(folder / f"{s}.pt", weights_only=True) for s in ("train", "test")}
            self.train_set, self.test_set = (
                TensorImages(splits[s]["images"], splits[s]["labels"], splits[s]["masks"])
                for s in ("train", "test")
            )
            self.classes = list(CLASSES)
        elif kind == "folder":
            self._setup_folder(Path(path))
        else:
            self._setup_cifar(kind, Path(path))

    def _setup_folder(self, root: Path) -> None:
        from torchvision.datasets import ImageFolder

        test_dir = next((root / d for d in ("test", "val") if (root / d).is_dir()), None)
        if not (root / "train").is_dir() or test_dir is None:
            raise DataError(
                f"{root} must hold train/ and test/ (or val/) folders, each with one folder per class"
            )
        train, test = ImageFolder(str(root / "train")), ImageFolder(str(test_dir))
        if train.classes != test.classes:
            raise DataError(f"{root}: train and {test_dir.name} have different class folders")
        maps = root / "maps" if (root / "maps").is_dir() else None  # precomputed maps, for the oracle scorer
        self.train_set, self.test_set = (
            _Folder(d, self.image_size, root / split, maps / split if maps else None)
            for d, split in ((train, "train"), (test, test_dir.name))
        )
        self.classes = list(train.classes)

    def _setup_cifar(self, kind: str, root: Path) -> None:
        from torchvision.datasets import CIFAR10, CIFAR100

        cls = CIFAR10 if kind == "cifar10" else CIFAR100
        try:
            train, test = (cls(str(root), train=t, download=False) for t in (True, False))
        except RuntimeError as err:
            raise DataError(
                f"{kind} not found under {root}: put the CIFAR python version there (torchvision's layout, e.g. "
                f"{root}/{cls.base_folder}); nothing is downloaded here ({err})"
            ) from err
        self.train_set, self.test_set = _Folder(train, self.image_size), _Folder(test, self.image_size)
        self.classes = list(train.classes)

    def train_dataloader(self) -> DataLoader:
        self.setup()
        assert self.train_set is not None
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.train_set,
            self.batch_size,
            shuffle=True,
            drop_last=True,
            generator=g,
            num_workers=self.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        self.setup()
        assert self.test_set is not None
        return DataLoader(self.test_set, self.batch_size, num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self.test_dataloader()
