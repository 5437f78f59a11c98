from pathlib import Path

import pytest
from PIL import Image

from benchmarks.data import background_photos, fetch
from benchmarks.data.backgrounds import PHOTOS, Backgrounds
from benchmarks.data.packages import SourceMissingError


@pytest.fixture(scope="module", autouse=True)
def fetched() -> None:
    fetch("mate-backgrounds")  # instant when the setup script already fetched it


def test_twelve_real_photos_at_full_resolution() -> None:
    paths = background_photos()
    assert [p.stem for p in paths] == list(PHOTOS)
    for path in paths:
        with Image.open(path) as im:
            assert im.mode == "RGB" and max(im.size) >= 1280 and min(im.size) >= 1024
            colours = im.resize((32, 32)).getcolors(maxcolors=1024) or []
            assert len(colours) > 200  # a photograph, not a flat or synthetic picture


def test_missing_source_says_how_to_fetch(tmp_path: Path) -> None:
    with pytest.raises(SourceMissingError, match="effinfer-data fetch mate-backgrounds"):
        background_photos(tmp_path)


def test_a_copy_of_an_older_layout_is_fetched_again(tmp_path: Path) -> None:
    """The photos were once stored as 768 px thumbnails: such a copy must not pass for the full-resolution one."""
    fetch("mate-backgrounds", tmp_path, from_path=Backgrounds().path())
    manifest = Backgrounds().path(tmp_path) / "MANIFEST.json"
    manifest.write_text(manifest.read_text().replace('"layout": 2', '"layout": 1'))
    assert not Backgrounds().is_fetched(tmp_path)
    fetch("mate-backgrounds", tmp_path, from_path=Backgrounds().path())
    assert Backgrounds().is_fetched(tmp_path) and len(background_photos(tmp_path)) == 12
