"""fetch and the CLI: idempotence, atomicity, using a user's copy, and the errors users see."""

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from benchmarks.data import (
    SOURCES,
    SourceMissingError,
    background_photos,
    data_root,
    fetch,
    font_files,
    foolbox_samples,
    load_austen,
    load_fashion_mnist,
    ppocr_det_model,
    smollm2_dir,
)
from benchmarks.data import packages as packages_module
from benchmarks.data.cli import main
from benchmarks.data.packages import DebianPackage

LOADERS = {
    "fashion-mnist": lambda d: load_fashion_mnist("train", d),
    "austen": load_austen,
    "smollm2": smollm2_dir,
    "foolbox-samples": foolbox_samples,
    "mate-backgrounds": background_photos,
    "fonts": font_files,
    "ppocr-det": ppocr_det_model,
}


@pytest.fixture(scope="module")
def foolbox_folder() -> Path:
    """The real foolbox samples, to hand to fetch as the user's own copy."""
    return fetch("foolbox-samples")


def test_data_root_precedence(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("EFFINFER_DATA", str(tmp_path / "env"))
    assert data_root() == tmp_path / "env"
    assert data_root(tmp_path / "flag") == tmp_path / "flag"
    monkeypatch.delenv("EFFINFER_DATA")
    assert data_root() == Path.home() / ".cache" / "effinfer"


@pytest.mark.parametrize("name", sorted(LOADERS))
def test_loader_on_empty_data_dir_names_the_fetch_command(tmp_path: Path, name: str) -> None:
    assert set(LOADERS) == set(SOURCES)
    with pytest.raises(SourceMissingError, match=f"run `effinfer-data fetch {name} --data-dir {tmp_path}`"):
        LOADERS[name](tmp_path)


def test_unknown_source_lists_the_known_ones(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match="known sources: .*fashion-mnist.*smollm2"):
        fetch("imagenet", tmp_path)
    assert main(["fetch", "imagenet", "--data-dir", str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith("error: unknown source 'imagenet'")


def test_from_a_copy_then_idempotent(tmp_path: Path, foolbox_folder: Path) -> None:
    target = fetch("foolbox-samples", tmp_path, from_path=foolbox_folder)
    assert target == tmp_path / "foolbox-samples"
    assert len(foolbox_samples(tmp_path)) == 100
    stamp = (target / "MANIFEST.json").stat().st_mtime_ns
    # Second call: nothing to do, even when the copy it came from is no longer given.
    assert fetch("foolbox-samples", tmp_path) == target
    assert (target / "MANIFEST.json").stat().st_mtime_ns == stamp


def test_from_a_wheel_extracts_only_the_data(tmp_path: Path, foolbox_folder: Path) -> None:
    wheel = tmp_path / "foolbox-3.3.4-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("foolbox/__init__.py", "raise ImportError('never imported')\n")
        for path in foolbox_folder.glob("*_*_*.*"):
            archive.write(path, f"foolbox/data/{path.name}")
    fetch("foolbox-samples", tmp_path / "root", from_path=wheel)
    files = {p.name for p in (tmp_path / "root" / "foolbox-samples").iterdir()}
    assert len(files) == 101 and "MANIFEST.json" in files and "__init__.py" not in files


def test_from_a_wrong_file_fails_and_leaves_nothing(tmp_path: Path, capsys) -> None:
    wrong = tmp_path / "notes.txt"
    wrong.write_text("not a data set\n")
    root = tmp_path / "root"
    with pytest.raises(SourceMissingError, match="train-images-idx3-ubyte.gz not found.*apt-get download"):
        fetch("fashion-mnist", root, from_path=wrong)
    assert main(["fetch", "foolbox-samples", "--data-dir", str(root), "--from", str(wrong)]) == 2
    assert "error: cannot fetch foolbox-samples" in capsys.readouterr().err
    assert list(root.iterdir()) == []  # no half-written folder, no temp folder left behind


def test_corrupt_file_is_refused_at_fetch_time(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("train-images-idx3", "train-labels-idx1", "t10k-images-idx3", "t10k-labels-idx1"):
        (copy / f"{name}-ubyte.gz").write_bytes(b"garbage")
    with pytest.raises(SourceMissingError, match="not a gzipped IDX file"):
        fetch("fashion-mnist", tmp_path / "root", from_path=copy)
    assert not (tmp_path / "root" / "fashion-mnist").exists()


def test_existing_foreign_folder_is_left_alone(tmp_path: Path, foolbox_folder: Path) -> None:
    foreign = tmp_path / "foolbox-samples"
    foreign.mkdir()
    (foreign / "mine.txt").write_text("user data")
    with pytest.raises(SourceMissingError, match="was not written by `effinfer-data fetch`"):
        fetch("foolbox-samples", tmp_path, from_path=foolbox_folder)
    assert [p.name for p in foreign.iterdir()] == ["mine.txt"]


def test_from_needs_one_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not 'all'"):
        fetch("all", tmp_path, from_path=tmp_path)


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian)")
def test_apt_without_package_lists_says_run_apt_get_update(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(packages_module, "APT_LISTS", tmp_path / "no-lists")  # as on a fresh machine
    monkeypatch.setattr(os, "geteuid", lambda: 1000)  # not root, so it must not try to update itself
    with pytest.raises(SourceMissingError, match=r"run `apt-get update` \(as root\) first"):
        DebianPackage("effinfer-no-such-package").download(tmp_path / "download")


def test_cli_list_shows_status(tmp_path: Path, foolbox_folder: Path) -> None:
    fetch("foolbox-samples", tmp_path, from_path=foolbox_folder)
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.data", "list", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = {line.split()[0]: line for line in result.stdout.splitlines() if line.strip()}
    assert f"fetched: {tmp_path / 'foolbox-samples'}" in lines["foolbox-samples"]
    assert "PyPI wheel foolbox==3.3.4" in lines["foolbox-samples"] and "MIT" in lines["foolbox-samples"]
    assert lines["fashion-mnist"].endswith("not fetched")
