import shutil

import pytest
import torch
from torch.utils.data import DataLoader

from benchmarks.data import foolbox_samples
from geoad.data import (
    DataError,
    GeoADDataModule,
    ImageData,
    SelfLabelledDataset,
    as_nchw,
    load_dataset,
    load_images,
    normal_training_images,
    read_image_folder,
)


def test_self_labelled_epoch_visits_every_pair_once():
    images = torch.arange(5, dtype=torch.uint8).view(5, 1, 1, 1).expand(5, 1, 4, 4).contiguous()
    dm = GeoADDataModule("unused", batch_size=7)
    dm.normal = ImageData(images, torch.zeros(5, dtype=torch.long))  # as setup() would leave it
    dm.n_transforms = 8
    pairs = [
        (int(img[0, 0, 0]), int(t)) for x, ts in dm.train_dataloader() for img, t in zip(x, ts, strict=True)
    ]
    assert sorted(pairs) == [(i, t) for i in range(5) for t in range(8)]
    batch = next(iter(DataLoader(SelfLabelledDataset(images, 8), batch_size=3, collate_fn=lambda b: b)))
    assert batch[0].shape == (3, 1, 4, 4) and batch[1].tolist() == [0, 1, 2]


def test_normal_training_images_are_one_class_and_seeded():
    a = normal_training_images("fashion-mnist", 7, limit=50, seed=3)
    b = normal_training_images("fashion-mnist", "Sneaker", limit=50, seed=3)
    assert a.images.shape == (50, 1, 28, 28) and (a.labels == 7).all()
    assert torch.equal(a.images, b.images)
    with pytest.raises(DataError, match="class 10 does not exist"):
        normal_training_images("fashion-mnist", 10)
    with pytest.raises(DataError, match="no class named"):
        normal_training_images("fashion-mnist", "Hat")


def test_image_folder_skips_corrupt_files_and_converts(tmp_path):
    for s in foolbox_samples(dataset="fashionMNIST")[:3] + foolbox_samples(dataset="cifar10")[:2]:
        shutil.copy(s.path, tmp_path / s.path.name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    data = read_image_folder(tmp_path, channels=1, size=28)
    assert data.images.shape == (5, 1, 28, 28)
    assert [f.endswith("broken.png") for f, _ in data.skipped] == [True]
    assert "broken.png" not in data.names


def test_empty_folder_and_bad_tensor_files(tmp_path):
    with pytest.raises(DataError, match="no image files"):
        load_images(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(DataError, match="not a readable torch tensor file"):
        load_images(tmp_path / "junk.pt")
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        as_nchw(torch.full((2, 28, 28), 3.0), "x")


def test_tensor_and_folder_datasets(tmp_path):
    images = torch.randint(0, 256, (12, 28, 28), dtype=torch.uint8)
    labels = torch.arange(12) % 3
    torch.save(
        {
            "train_images": images,
            "train_labels": labels,
            "test_images": images,
            "test_labels": labels,
            "classes": ["a", "b", "c"],
        },
        tmp_path / "set.pt",
    )
    data = load_dataset(str(tmp_path / "set.pt"), "test")
    assert data.images.shape == (12, 1, 28, 28) and data.classes == ["a", "b", "c"]
    for split in ("train", "test"):
        for cls, n in (("cat", 2), ("dog", 3)):
            (tmp_path / "imgs" / split / cls).mkdir(parents=True)
            for s in foolbox_samples(dataset="cifar10")[:n]:
                shutil.copy(s.path, tmp_path / "imgs" / split / cls / s.path.name)
    folder = load_dataset(str(tmp_path / "imgs"), "train")
    assert folder.classes == ["cat", "dog"] and folder.labels.tolist() == [0, 0, 1, 1, 1]
    assert folder.images.shape == (5, 3, 32, 32)
    with pytest.raises(DataError, match="unknown data set"):
        load_dataset("imagenet-22k", "train")
