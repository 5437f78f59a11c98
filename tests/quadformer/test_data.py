from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from quadformer.data import FOLDER, ClutterSettings, DataError, ImageDataModule, generate_clutter

from .conftest import TINY


def test_clutter_set_shapes_masks_and_cache(tiny_clutter: ImageDataModule, data_dir: Path) -> None:
    batch = next(iter(tiny_clutter.train_dataloader()))
    assert batch["image"].shape == (8, 3, 64, 64) and batch["image"].dtype == torch.uint8
    assert batch["mask"].shape == (8, 64, 64) and tiny_clutter.num_classes == 10
    areas = batch["mask"].flatten(1).sum(1)
    assert (areas > 20).all() and (areas < 24 * 24).all()  # one 16-24 px item each
    folder = generate_clutter(TINY, data_dir)
    assert folder.parent.name == FOLDER and (folder / "settings.json").is_file()
    mtime = (folder / "train.pt").stat().st_mtime
    assert (
        generate_clutter(TINY, data_dir) == folder and (folder / "train.pt").stat().st_mtime == mtime
    )  # cached


def test_generation_is_seeded_and_keyed(data_dir: Path) -> None:
    a = ClutterSettings(train=4, test=2, size=32, item_min=16, item_max=20, seed=1)
    b = ClutterSettings(train=4, test=2, size=32, item_min=16, item_max=20, seed=2)
    assert a.key() != b.key() and a.key() == ClutterSettings(**{**a.__dict__}).key()
    fa = torch.load(generate_clutter(a, data_dir) / "train.pt")
    fb = torch.load(generate_clutter(b, data_dir) / "train.pt")
    assert not torch.equal(fa["images"], fb["images"])
    assert fa["images"].float().std() > 20  # photos and items, not a flat canvas


def test_test_split_uses_unseen_backgrounds_and_items(tiny_clutter: ImageDataModule) -> None:
    train = tiny_clutter.train_set.images
    test = tiny_clutter.test_set.images
    assert len(train) == 48 and len(test) == 16
    # colour statistics differ: different photos (Dune, Storm, Wood only in test)
    assert not torch.allclose(train.float().mean((0, 2, 3)), test.float().mean((0, 2, 3)), atol=2)


def test_bad_settings_and_sources(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="item_min"):
        ClutterSettings(item_min=40, item_max=30)
    with pytest.raises(DataError, match="unknown data source"):
        ImageDataModule("imagenet")
    with pytest.raises(DataError, match="train/ and test/"):
        ImageDataModule(f"folder:{tmp_path}").setup()
    with pytest.raises(DataError, match="nothing is downloaded"):
        ImageDataModule(f"cifar10:{tmp_path}").setup()


def test_image_folder(tmp_path: Path) -> None:
    for split in ("train", "val"):
        for k, cls in enumerate(("cat", "dog")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("L", (40, 30), 60 * k).save(tmp_path / split / cls / "a.png")  # greyscale: converted
            Image.new("RGBA", (20, 20), (9, 9, 9, 0)).save(tmp_path / split / cls / "b.png")
    dm = ImageDataModule(f"folder:{tmp_path}", image_size=32, batch_size=4)
    batch = next(iter(dm.test_dataloader()))
    assert batch["image"].shape == (4, 3, 32, 32) and dm.classes == ["cat", "dog"] and "mask" not in batch


def test_image_folder_with_precomputed_maps(tmp_path: Path) -> None:
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            (tmp_path / "maps" / split / cls).mkdir(parents=True)
            Image.new("RGB", (32, 32), (90, 90, 90)).save(tmp_path / split / cls / "x.jpg")
            spot = Image.new("L", (16, 16), 0)
            spot.paste(255, (0, 0, 8, 8))  # salient top-left quarter
            spot.save(tmp_path / "maps" / split / cls / "x.png")
    dm = ImageDataModule(f"folder:{tmp_path}", image_size=32, batch_size=2)
    assert dm.has_masks
    batch = next(iter(dm.test_dataloader()))
    assert batch["mask"].shape == (2, 32, 32)
    assert batch["mask"][:, :14, :14].min() > 200 and batch["mask"][:, 18:, 18:].max() < 50
    (tmp_path / "maps" / "test" / "b" / "x.png").unlink()
    with pytest.raises(DataError, match="no importance map for .*x.jpg"):
        dm.test_set[1]  # type: ignore[index]
