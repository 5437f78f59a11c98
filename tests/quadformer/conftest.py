"""Shared fixtures: one thread (the CPU is shared; two threads ran tiny ops many times slower), a data root holding
the fetched sources the clutter set needs (so generated test sets stay in a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks.data import fetch
from quadformer.data import ClutterSettings, ImageDataModule
from quadformer.train import fit, load_profile


@pytest.fixture(scope="session", autouse=True)
def one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    for name in ("fashion-mnist", "mate-backgrounds"):
        fetched = fetch(name)  # instant when setup.sh already fetched it
        (root / fetched.name).symlink_to(fetched)
    return root


TINY = ClutterSettings(train=48, test=16, size=64, item_min=16, item_max=24, distractors=2, seed=3)


@pytest.fixture(scope="session")
def tiny_clutter(data_dir: Path) -> ImageDataModule:
    dm = ImageDataModule("clutter", TINY, data_dir, batch_size=8)
    dm.prepare_data()
    dm.setup()
    return dm


def tiny_config(data_dir: Path, **quadtree: Any) -> dict[str, Any]:
    """A 64 px clutter set, a 2-block dim-32 ViT, a few steps: seconds on one core."""
    data = {
        k: getattr(TINY, k) for k in ("train", "test", "size", "item_min", "item_max", "distractors", "seed")
    }
    return load_profile(
        "quick",
        {
            "data": {**data, "data_dir": str(data_dir), "batch_size": 8},
            "model": {"depth": 2, "embed_dim": 32, "num_heads": 2, "patch_size": 8},
            "quadtree": {"tokens": 16, "min_patch": 8, "max_patch": 32, **quadtree},
            "train": {"steps": 6, "warmup_steps": 2, "checkpoint_every": 3},
        },
    )


@pytest.fixture(scope="session")
def tiny_model(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """model.pt of a Quadformer (pixel-blur, 16 tokens) trained for a few steps on the tiny clutter set."""
    out = tmp_path_factory.mktemp("tiny-model")
    fit(tiny_config(data_dir), out, log=None)
    return out / "model.pt"
