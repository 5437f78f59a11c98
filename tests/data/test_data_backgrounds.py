from pathlib import Path

import pytest
from PIL import Image

from benchmarks.data import background_photos, fetch
from benchmarks.data.backgrounds import MAX_SIDE, PHOTOS
from benchmarks.data.packages import SourceMissingError


@pytest.fixture(scope="module", autouse=True)
def fetched() -> None:
    fetch("mate-backgrounds")  # instant when the setup script already fetched it


def test_twelve_real_photos_downscaled() -> None:
    paths = background_photos()
    assert [p.stem for p in paths] == list(PHOTOS)
    for path in paths:
        with Image.open(path) as im:
            assert im.mode == "RGB" and max(im.size) == MAX_SIDE and min(im.size) >= 400
            colours = im.resize((32, 32)).getcolors(maxcolors=1024) or []
            assert len(colours) > 200  # a photograph, not a flat or synthetic picture


def test_missing_source_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError, match="effinfer-data fetch mate-backgrounds"):
        background_photos(tmp_path)
