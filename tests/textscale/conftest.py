"""Shared fixtures: the real fonts and photos (fetched data sources) and one tiny generated data set."""

from __future__ import annotations

from pathlib import Path

import pytest

from benchmarks.data import background_files, font_files
from textscale.synth import SynthConfig, generate_split

TINY = SynthConfig(long_side=480, lines=(3, 6), min_height_px=6, max_height_frac=0.18)


@pytest.fixture(scope="session")
def fonts() -> list[Path]:
    return font_files()


@pytest.fixture(scope="session")
def backgrounds() -> list[Path]:
    return background_files()


@pytest.fixture(scope="session")
def tiny_split(tmp_path_factory, fonts, backgrounds) -> Path:
    """Four 480 px test-split images in ICDAR15 layout."""
    out = tmp_path_factory.mktemp("synth") / "test"
    return generate_split(out, "test", 4, fonts, backgrounds, seed=3, cfg=TINY)
