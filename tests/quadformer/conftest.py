"""Shared fixtures: one thread (the CPU is shared; two threads ran tiny ops many times slower), a data root holding
the fetched sources the clutter set needs (so generated test sets stay in a temporary folder)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from benchmarks.data import fetch
from quadformer.data import ClutterSettings, ImageDataModule


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
