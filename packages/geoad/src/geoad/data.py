"""Image data: named data sets, user folders and tensor files, and the self-labelled training set.

Everything is held as uint8 [N, C, H, W] tensors (Fashion-MNIST is 47 MB, CIFAR 150 MB); conversion to floats,
padding and the transformations happen later, per batch, on the model's device.

Data sets (``--dataset``):
    fashion-mnist                 from benchmarks.data (fetch it with ``effinfer-data fetch fashion-mnist``)
    cifar10, cifar100             torchvision's files under <data root>/cifar10, /cifar100 (CIFAR-100 with its 20
                                  superclasses as labels, as the paper does); ``--download`` fetches them
    DIR                           DIR/train/<class>/*.png and DIR/test/<class>/*.png (ImageFolder layout)
    FILE.pt                       a dict with train_images, train_labels, test_images, test_labels (uint8 images
                                  [N, H, W] or [N, C, H, W]) and optionally classes (a list of names)
Unlabelled images (``geoad score`` input, ``geoad fit --images``): a folder of image files (searched recursively)
or a .pt file with one uint8/float tensor [N, H, W] / [N, C, H, W] (or a dict with "images").
"""

from __future__ import annotations

import pickle
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from geoad.transforms import notice

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
NAMED = ("fashion-mnist", "cifar10", "cifar100")
Split = Literal["train", "test"]


class DataError(ValueError):
    """Input data that cannot be used as given; the message says what was wrong and what to do."""


@dataclass
class ImageData:
    images: Tensor  # uint8 [N, C, H, W]
    labels: Tensor  # int64 [N]; -1 where unlabelled
    classes: list[str] = field(default_factory=list)
    names: list[str] | None = None  # file names (image folders) for reporting scores
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (file, why) of unreadable files

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, index: Tensor) -> ImageData:
        names = [self.names[i] for i in index.tolist()] if self.names is not None else None
        return ImageData(self.images[index], self.labels[index], self.classes, names, self.skipped)


def as_nchw(images: Tensor, what: str) -> Tensor:
    """uint8 [N, H, W] / [N, C, H, W] (or float in [0, 1]) -> uint8 [N, C, H, W]."""
    if images.ndim == 3:
        images = images[:, None]
    if images.ndim != 4 or images.shape[0] == 0:
        raise DataError(
            f"{what}: expected a non-empty image tensor [N, H, W] or [N, C, H, W], got {tuple(images.shape)}"
        )
    if images.shape[1] not in (1, 3) and images.shape[-1] in (1, 3):
        images = images.permute(0, 3, 1, 2)  # NHWC, as numpy/PIL give it
    if images.dtype.is_floating_point:
        lo, hi = images.min().item(), images.max().item()
        if lo < 0 or hi > 1:
            raise DataError(
                f"{what}: float images must lie in [0, 1], these span [{lo:.3g}, {hi:.3g}]; "
                "pass uint8 0..255 or scale them"
            )
        images = (images * 255).round().to(torch.uint8)
    elif images.dtype != torch.uint8:
        raise DataError(f"{what}: images must be uint8 or float, got {images.dtype}")
    return images.contiguous()


def load_dataset(
    name: str, split: Split, data_dir: str | Path | None = None, download: bool = False
) -> ImageData:
    """One split ("train" or "test") of a labelled data set (see the module doc for the names)."""
    if name == "fashion-mnist":
        from benchmarks.data import load_fashion_mnist
        from benchmarks.data.fashion_mnist import CLASSES

        images, labels = load_fashion_mnist(split, data_dir)
        return ImageData(images[:, None].contiguous(), labels, list(CLASSES))
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, split, data_dir, download)
    path = Path(name)
    if path.suffix == ".pt":
        return _load_tensor_dataset(path, split)
    if path.is_dir():
        return _load_image_folder_dataset(path, split)
    raise DataError(
        f"unknown data set {name!r}: use one of {', '.join(NAMED)}, a folder with train/ and test/ "
        "subfolders (one folder per class), or a .pt file (see `geoad evaluate --help`)"
    )


def _load_cifar(name: str, split: Split, data_dir: str | Path | None, download: bool) -> ImageData:
    from torchvision.datasets import CIFAR10, CIFAR100

    from benchmarks.data import data_root

    root = data_root(data_dir) / name
    cls = CIFAR10 if name == "cifar10" else CIFAR100
    try:
        ds = cls(str(root), train=split == "train", download=download)
    except RuntimeError as err:
        raise DataError(
            f"{name} not found under {root} ({err}); rerun with --download (needs a network) or put "
            f"torchvision's {name} files there"
        ) from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    if name == "cifar10":
        return ImageData(images, torch.tensor(ds.targets), list(ds.classes))
    # the paper uses CIFAR-100's 20 coarse superclasses, which torchvision does not expose: read them from its file
    with open(root / ds.base_folder / ("train" if split == "train" else "test"), "rb") as f:
        coarse = pickle.load(f, encoding="latin1")["coarse_labels"]
    with open(root / ds.base_folder / "meta", "rb") as f:
        classes = pickle.load(f, encoding="latin1")["coarse_label_names"]
    return ImageData(images, torch.tensor(coarse), classes)


def _load_tensor_dataset(path: Path, split: Split) -> ImageData:
    blob = _torch_load(path)
    keys = (f"{split}_images", f"{split}_labels")
    if not isinstance(blob, dict) or any(k not in blob for k in keys):
        raise DataError(
            f"{path}: a labelled data set file must be a dict with {keys[0]} and {keys[1]} "
            "(and the same for the other split)"
        )
    images = as_nchw(torch.as_tensor(blob[keys[0]]), str(path))
    labels = torch.as_tensor(blob[keys[1]]).long()
    if len(labels) != len(images):
        raise DataError(f"{path}: {len(images)} {split} images but {len(labels)} labels")
    classes = list(blob.get("classes") or [str(c) for c in range(int(labels.max()) + 1)])
    return ImageData(images, labels, classes)


def _load_image_folder_dataset(root: Path, split: Split) -> ImageData:
    folder = root / split
    class_dirs = sorted(d for d in folder.iterdir() if d.is_dir()) if folder.is_dir() else []
    if not class_dirs:
        raise DataError(
            f"{folder} has no class subfolders: a folder data set needs {root}/train/<class>/ and "
            f"{root}/test/<class>/ with the same class names"
        )
    first = read_image_folder(class_dirs[0], recursive=False)
    channels, size = first.images.shape[1], first.images.shape[-1]  # the other classes are brought to these
    parts = [first] + [read_image_folder(d, channels, size, recursive=False) for d in class_dirs[1:]]
    labels = torch.cat([torch.full((len(p),), c) for c, p in enumerate(parts)])
    names = []
    for d, p in zip(class_dirs, parts, strict=True):
        assert p.names is not None  # read_image_folder names every image it returns
        names += [f"{d.name}/{n}" for n in p.names]
    return ImageData(
        torch.cat([p.images for p in parts]),
        labels,
        [d.name for d in class_dirs],
        names,
        [s for p in parts for s in p.skipped],
    )


def load_images(path: str | Path, channels: int | None = None, size: int | None = None) -> ImageData:
    """Unlabelled images from a folder of image files or a .pt tensor file (see the module doc)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path} does not exist: give a folder of images or a .pt tensor file")
    if path.is_dir():
        return read_image_folder(path, channels, size)
    if path.suffix != ".pt":
        raise DataError(
            f"{path}: give a folder of images or a .pt tensor file (got a {path.suffix or 'plain'} file)"
        )
    blob = _torch_load(path)
    if isinstance(blob, dict):
        if "images" not in blob:
            raise DataError(f"{path}: a dict tensor file needs an 'images' entry")
        blob = blob["images"]
    if not isinstance(blob, Tensor):
        raise DataError(f"{path}: expected a tensor [N, H, W] or [N, C, H, W], got {type(blob).__name__}")
    images = as_nchw(blob, str(path))
    return ImageData(images, torch.full((len(images),), -1))


def read_image_folder(
    folder: Path, channels: int | None = None, size: int | None = None, recursive: bool = True
) -> ImageData:
    """Every readable image file under ``folder`` (sorted by path), as uint8 [N, C, size, size].

    Unreadable or corrupt files are skipped and listed in ``skipped``; images are converted to ``channels``
    (default: those of the first image) and resized to ``size`` x ``size`` (default: the first image's longer
    side; the aspect ratio is not kept), with one notice per kind of change.
    """
    files = sorted(
        p
        for p in (folder.rglob("*") if recursive else folder.iterdir())
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    )
    if not files:
        raise DataError(f"{folder} contains no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
    arrays: list[Tensor] = []
    names: list[str] = []
    skipped: list[tuple[str, str]] = []
    changes: Counter[str] = Counter()
    for file in files:  # one file at a time is unavoidable for decoding; everything after is batched
        try:
            with Image.open(file) as im:
                im.load()
                mode = (
                    {1: "L", 3: "RGB"}[channels]
                    if channels
                    else ("L" if im.mode in ("L", "1", "I", "I;16") else "RGB")
                )
                if im.mode != mode:
                    changes[f"converted {im.mode} -> {mode}"] += 1
                    im = im.convert(mode)
                side = size or max(im.size)
                channels = channels or (1 if mode == "L" else 3)
                if im.size != (side, side):
                    changes[f"resized {im.size[0]}x{im.size[1]} -> {side}x{side}"] += 1
                    im = im.resize((side, side), Image.Resampling.BILINEAR)
                size = side
                t = torch.frombuffer(bytearray(im.tobytes()), dtype=torch.uint8).view(side, side, -1)
        except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as err:
            skipped.append((str(file), f"{type(err).__name__}: {err}"))
            continue
        arrays.append(t.permute(2, 0, 1))
        names.append(str(file.relative_to(folder)))
    for change, count in changes.items():
        notice(f"{folder}: {change} for {count} image(s)")
    if skipped:
        notice(
            f"{folder}: skipped {len(skipped)} unreadable file(s): "
            + "; ".join(f"{f} ({why})" for f, why in skipped[:5])
            + (" ..." if len(skipped) > 5 else "")
        )
    if not arrays:
        raise DataError(f"{folder}: none of the {len(files)} image files could be read")
    return ImageData(torch.stack(arrays), torch.full((len(arrays),), -1), names=names, skipped=skipped)


def _torch_load(path: Path) -> object:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        raise DataError(f"{path}: not a readable torch tensor file ({type(err).__name__}: {err})") from err


def resolve_class(data: ImageData, normal_class: int | str) -> int:
    """A class index or name -> its index, with an error listing the classes that exist."""
    classes = data.classes or [str(c) for c in range(int(data.labels.max()) + 1)]
    if isinstance(normal_class, str) and not normal_class.lstrip("-").isdigit():
        if normal_class not in classes:
            raise DataError(f"no class named {normal_class!r}; the classes are {classes}")
        return classes.index(normal_class)
    index = int(normal_class)
    if not 0 <= index < len(classes):
        raise DataError(
            f"class {index} does not exist: this data set has classes 0..{len(classes) - 1} ({classes})"
        )
    return index


def normal_training_images(
    source: str,
    normal_class: int | str | None,
    data_dir: str | Path | None = None,
    limit: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> ImageData:
    """The normal training images: one class of a data set's train split, or all of an unlabelled source."""
    if normal_class is None:
        data = load_images(source)
    else:
        data = load_dataset(source, "train", data_dir, download)
        data = data.subset(torch.nonzero(data.labels == resolve_class(data, normal_class)).flatten())
    if limit is not None and limit < len(data):
        # a seeded subset, so that a rerun (and the baselines) see the same images
        data = data.subset(torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:limit])
    return data


class SelfLabelledDataset(Dataset[tuple[Tensor, Tensor]]):
    """N images x T transformations = N * T (image, transformation label) pairs, made on demand.

    Index i stands for image i // T under transformation i % T. ``__getitems__`` serves a whole batch of indices
    with one tensor gather (the DataLoader calls it instead of N single ``__getitem__`` calls).
    """

    def __init__(self, images: Tensor, n_transforms: int) -> None:
        self.images, self.n_transforms = images, n_transforms

    def __len__(self) -> int:
        return len(self.images) * self.n_transforms

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.images[index // self.n_transforms], torch.tensor(index % self.n_transforms)

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices)
        return self.images[index // self.n_transforms], index % self.n_transforms


def _keep_batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    return batch  # __getitems__ already returns the stacked batch


@dataclass(frozen=True)
class DataSettings:
    """What GeoADDataModule loads and how it batches it (its constructor's arguments, typed)."""

    source: str
    normal_class: int | str | None = None
    batch_size: int = 128
    data_dir: str | Path | None = None
    limit: int | None = None
    seed: int = 0
    num_workers: int = 0
    download: bool = False


class GeoADDataModule(L.LightningDataModule):
    """The self-labelled training set of one normal class (or of a folder / tensor file of normal images)."""

    def __init__(
        self,
        source: str,
        normal_class: int | str | None = None,
        n_transforms: int = 72,
        batch_size: int = 128,
        data_dir: str | Path | None = None,
        limit: int | None = None,
        seed: int = 0,
        num_workers: int = 0,
        download: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters(ignore="n_transforms")  # into the checkpoints; the code reads settings
        self.settings = DataSettings(
            source, normal_class, batch_size, data_dir, limit, seed, num_workers, download
        )
        self.n_transforms = (
            n_transforms  # set by GeoADDetector.fit to the size of the model's transformation set
        )
        self.normal: ImageData | None = None

    def setup(self, stage: str | None = None) -> None:
        self.normal_data()

    def normal_data(self) -> ImageData:
        """The normal training images, loaded on the first call."""
        if self.normal is None:
            s = self.settings
            self.normal = normal_training_images(
                s.source, s.normal_class, s.data_dir, s.limit, s.seed, s.download
            )
        return self.normal

    def train_dataloader(self) -> DataLoader[tuple[Tensor, Tensor]]:
        dataset = SelfLabelledDataset(self.normal_data().images, self.n_transforms)
        # torch's stubs type collate_fn as taking a list of samples; with __getitems__ it gets the whole batch
        collate = cast(Callable[[list[Any]], Any], _keep_batch)
        # shuffle=True: every epoch visits every (image, transformation) pair once, in a seeded random order
        return DataLoader(
            dataset,
            batch_size=self.settings.batch_size,
            shuffle=True,
            collate_fn=collate,
            num_workers=self.settings.num_workers,
            persistent_workers=self.settings.num_workers > 0,
        )
