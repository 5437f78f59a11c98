"""Real nature photographs from Debian's ``mate-backgrounds``, as backgrounds for cluttered image sets.

Twelve photos (1280x1024 to 2560x1920, GPL-2+); stored down-scaled to at most ``MAX_SIDE`` pixels on the long side
(JPEG), which is all a 128 px crop ever needs and keeps the cache small.
"""

from __future__ import annotations

import os
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
MAX_SIDE = 768


@register
class Backgrounds(Source):
    name = "mate-backgrounds"
    description = "12 real nature photographs (MATE desktop backgrounds), down-scaled to 768 px"
    package = DebianPackage("mate-backgrounds")
    licence = "GPL-2+"
    size = "1 MB"
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
                    photo = im.convert("RGB")
            except OSError as e:
                raise SourceMissingError(f"{src} is not a readable image: {e}") from e
            photo.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            photo.save(out / f"{name}.jpg", quality=92)


def background_photos(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The photos' paths, in ``PHOTOS`` order (a fixed order, so a split by index is the same everywhere)."""
    folder = Backgrounds().require(data_dir)
    return [folder / f"{name}.jpg" for name in PHOTOS]
