"""Shared fixtures: real Fashion-MNIST images and one tiny detector trained on them (built once per session)."""

from __future__ import annotations

import pytest
import torch

from benchmarks.data import load_fashion_mnist
from geoad.data import GeoADDataModule
from geoad.detector import FitConfig, GeoADDetector

NORMAL = 1  # trousers: a shape the 8 flip/rotation transformations tell apart within a few hundred steps


@pytest.fixture(scope="session")
def normal_class() -> int:
    return NORMAL


@pytest.fixture(scope="session")
def fmnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = load_fashion_mnist("test")
    return images, labels


@pytest.fixture(scope="session")
def tiny_detector() -> GeoADDetector:
    """WRN-10-1 on 600 trouser images, 8 transformations, 120 steps of 64 (10-20 s on one CPU core)."""
    torch.set_num_threads(1)
    datamodule = GeoADDataModule("fashion-mnist", NORMAL, batch_size=64, limit=600)
    config = FitConfig(
        backbone="wrn-10-1",
        transforms="8",
        max_steps=120,
        batch_size=64,
        dirichlet_limit=300,
        accelerator="cpu",
        devices=1,
        precision="32-true",
    )
    return GeoADDetector.fit(datamodule, config)
