"""Fonts and a detector for TextScale's synthetic scene text (words rendered onto the ``mate-backgrounds`` photos of
``backgrounds.py``, with boxes).

* ``fonts``: the 35 URW base fonts (Debian ``fonts-urw-base35``, OpenType), less the two symbol fonts (Standard
  Symbols PS, D050000L dingbats) that draw no letters: 33 fonts in 9 families.
* ``ppocr-det``: PP-OCRv4's text detector as ONNX, from the PyPI wheel ``rapidocr-onnxruntime`` (only the graph is
  taken; the package is not installed: it would pull in the non-headless OpenCV).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .packages import DebianPackage, PyPIWheel, SourceMissingError
from .source import Source, register

SYMBOL_FONTS = ("StandardSymbolsPS", "D050000L")  # glyphs are symbols, not letters


def _copy_all(files: list[Path], out: Path) -> None:
    for path in files:
        shutil.copyfile(path, out / path.name)


@register
class Fonts(Source):
    name = "fonts"
    description = (
        "33 URW base fonts (9 families: Nimbus Sans/Roman/Mono, URW Bookman/Gothic, C059, P052, ...)"
    )
    package = DebianPackage("fonts-urw-base35")
    licence = "AGPL-3.0 with a font exception"
    size = "6 MB"
    canonical_urls = (
        "https://github.com/ArtifexSoftware/urw-base35-fonts/archive/refs/tags/20200910.tar.gz",
    )

    def install(self, tree: Path, out: Path) -> None:
        fonts = sorted(p for p in tree.rglob("*.otf") if p.is_file() and not p.name.startswith(SYMBOL_FONTS))
        if len({p.name for p in fonts}) < 10:
            raise SourceMissingError(
                f"found {len(fonts)} OpenType fonts, expected the 33 letter fonts of the {self.origin} "
                f"(from `{self.package.command}`) or a folder of .otf files"
            )
        _copy_all(list({p.name: p for p in fonts}.values()), out)


def font_files(data_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """The fetched fonts, sorted by name."""
    return sorted(Fonts().require(data_dir).glob("*.otf"))


PPOCR_DET = "ch_PP-OCRv4_det_infer.onnx"


@register
class PPOCRDetector(Source):
    name = "ppocr-det"
    description = "PP-OCRv4 text detector (DB, ONNX), the reference point for TextScale"
    package = PyPIWheel("rapidocr-onnxruntime", "1.4.4")
    licence = "Apache-2.0"
    size = "5 MB"
    canonical_urls = ("https://paddleocr.bj.bcebos.com/PP-OCRv4/chinese/ch_PP-OCRv4_det_infer.tar",)
    members = (PPOCR_DET,)

    def install(self, tree: Path, out: Path) -> None:
        shutil.copyfile(self.member(tree, f"rapidocr_onnxruntime/models/{PPOCR_DET}"), out / PPOCR_DET)


def ppocr_det_model(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The fetched PP-OCRv4 detection graph."""
    return PPOCRDetector().require(data_dir) / PPOCR_DET
