"""Shared fixtures: the real fonts and photos (fetched data sources) and one tiny generated data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.data import background_photos, font_files
from textscale.synth import SynthConfig, generate_split

TINY = SynthConfig(long_side=480, lines=(3, 6), min_height_px=6, max_height_frac=0.18)


@pytest.fixture(scope="session")
def fonts() -> list[Path]:
    return font_files()


@pytest.fixture(scope="session")
def backgrounds() -> list[Path]:
    return background_photos()


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory, fonts, backgrounds) -> Path:
    """Four 480 px test-split images in ICDAR15 layout."""
    out = tmp_path_factory.mktemp("synth") / "test"
    return generate_split(out, "test", 4, fonts, backgrounds, seed=3, cfg=TINY)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory, tiny_split) -> Path:
    """A tiny network trained for a few steps (seconds): a real model file, not a useful detector."""
    import torch

    from effinfer_core.trainer import TrainerFlags
    from textscale.train import train

    torch.set_num_threads(1)
    cfg = tiny_config()
    out = tmp_path_factory.mktemp("model") / "model.pt"
    train(cfg, tiny_split, out, TrainerFlags(accelerator="cpu", devices=1), log=lambda m: None)
    return out


def tiny_config(steps: int = 4) -> dict:
    from textscale.train import load_profile

    cfg = load_profile("quick")
    cfg["model"].update(backbone="lcnet_050", fpn_channels=32)
    cfg["train"].update(steps=steps, batch_size=2, crop=96, warmup_steps=1, checkpoint_every=2)
    return cfg
