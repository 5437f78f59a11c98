"""Atomic files and folders: a reader sees the old version or the complete new one."""

import os

import pytest


def test_atomic_file_replaces_whole_or_not_at_all(tmp_path):
    from effinfer_core.atomic import atomic_file

    target = tmp_path / "out.bin"
    with atomic_file(target) as tmp:
        tmp.write_bytes(b"first")
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_bytes(b"ha")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"first"  # untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]  # no temporary file left


def test_atomic_dir_replaces_whole_or_not_at_all(tmp_path):
    from effinfer_core.atomic import atomic_dir

    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("first")
    assert (target / "a.txt").read_text() == "first"

    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("half")
        raise RuntimeError("killed mid-write")
    assert (target / "a.txt").read_text() == "first"  # untouched

    with atomic_dir(target) as tmp:
        (tmp / "b.txt").write_text("second")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]  # replaced whole, not merged
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no temp or old folders left
    umask = os.umask(0o022)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o777 & ~umask  # mkdtemp's 0700 is not kept
