"""Jane Austen's six novels, as packaged by the R package janeaustenr (texts from Project Gutenberg)."""

from __future__ import annotations

import os
from pathlib import Path

from .packages import DebianPackage, SourceMissingError, download_url
from .rdata import RFormatError, read_lazyload_db, read_rdata
from .source import Source, register

# janeaustenr's data objects and the titles its austen_books() gives them, in publication order.
TITLES = {
    "sensesensibility": "Sense & Sensibility",
    "prideprejudice": "Pride & Prejudice",
    "mansfieldpark": "Mansfield Park",
    "emma": "Emma",
    "northangerabbey": "Northanger Abbey",
    "persuasion": "Persuasion",
}
LAZYLOAD_INDEX = "usr/lib/R/site-library/janeaustenr/data/Rdata.rdx"  # installed package (Debian)
CRAN = "https://cran.r-project.org/src/contrib"


@register
class Austen(Source):
    name = "austen"
    description = "Jane Austen's six novels, one text each (about 4.0M characters)"
    package = DebianPackage("r-cran-janeaustenr")
    licence = "MIT (package); texts public domain"
    size = "4 MB"
    canonical_urls = (
        f"{CRAN}/janeaustenr_1.0.0.tar.gz",
        f"{CRAN}/Archive/janeaustenr/janeaustenr_1.0.0.tar.gz",
    )

    def download_canonical(self, dest: Path) -> Path:
        # CRAN moves a release to Archive/ once a newer one is out: try the current place first.
        errors = []
        for url in self.canonical_urls:
            try:
                return download_url(url, dest)
            except SourceMissingError as e:
                errors.append(str(e))
        raise SourceMissingError("; ".join(errors))

    def install(self, tree: Path, out: Path) -> None:
        # An installed package keeps its data in a lazy-load database; a CRAN source tarball has .rda files.
        rda_files = {p.stem: p for p in tree.rglob("*.rda") if p.stem in TITLES}
        try:
            if rda_files:
                novels = {key: read_rdata(path)[key] for key, path in rda_files.items()}
            else:
                novels = read_lazyload_db(self.member(tree, LAZYLOAD_INDEX))
        except (RFormatError, KeyError, OSError) as e:
            raise SourceMissingError(f"cannot read janeaustenr's data: {e}") from e
        missing = [key for key in TITLES if key not in novels]
        if missing:
            raise SourceMissingError(f"janeaustenr's data lacks {', '.join(missing)}")
        for key in TITLES:
            lines = ["" if line is None else line for line in novels[key]]
            (out / f"{key}.txt").write_text("\n".join(lines), encoding="utf-8")


def load_austen(data_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """The six novels as {title: text}, one line of the original per line of text, in publication order."""
    folder = Austen().require(data_dir)
    return {title: (folder / f"{key}.txt").read_text(encoding="utf-8") for key, title in TITLES.items()}
