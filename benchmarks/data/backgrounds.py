"""Real nature photographs from Debian's ``mate-backgrounds``: the backgrounds of Quadformer's cluttered set and of
TextScale's synthetic scene text.

Twelve photos (1280x1024 to 2560x1920 and up, GPL-2+), kept at full resolution (TextScale renders 2000 px scenes;
Quadformer down-scales them on load, as its 128 px crops need no more).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .packages import DebianPackage, SourceMissingError
from .source import Source, register

PACKAGE_DIR = "usr/share/backgrounds/mate/nature"
PHOTOS = (
    "Aqua",
    "Blinds",
    "Dune",
    "FreshFlower",
    "Garden",
    "GreenMeadow",
    "LadyBird",
    "RainDrops",
    "Storm",
    "TwoWings",
    "Wood",
    "YellowFlower",
)


@register
class Backgrounds(Source):
    name = "mate-backgrounds"
    description = "12 real nature photographs (MATE desktop backgrounds), full resolution"
    package = DebianPackage("mate-backgrounds")
    licence = "GPL-2+"
    size = "45 MB"
    layout = 2  # 1 held 768 px thumbnails; 2 keeps full resolution
    canonical_urls = (
        "https://deb.debian.org/debian/pool/main/m/mate-backgrounds/mate-backgrounds_1.26.0-1_all.deb",
    )
    members = ("backgrounds/mate/nature/",)

    def install(self, tree: Path, out: Path) -> None:
        from PIL import Image  # here, not at the top: `effinfer-data list` should stay cheap

        for name in PHOTOS:
            src = self.member(tree, f"{PACKAGE_DIR}/{name}.jpg")
            try:
                with Image.open(src) as im:
                    im.verify()  # a truncated or foreign file fails here, not in a generator hours later
            except OSError as e:
                raise SourceMissingError(f"{src} is not a readable image: {e}") from e
            shutil.copyfile(src, out / f"{name}.jpg")


def background_photos(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The photos' paths, in ``PHOTOS`` order (a fixed order, so a split by index is the same everywhere)."""
    folder = Backgrounds().require(data_dir)
    return [folder / f"{name}.jpg" for name in PHOTOS]
