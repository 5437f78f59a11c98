"""Results records: one JSON object per measured variant, kept in a JSONL file that is only ever replaced whole.

An append writes the old content plus the new line to a temporary file in the same folder and renames it over the
original, so an interrupted write leaves either the old file or the new one, never a partial line.
"""

from __future__ import annotations

import fcntl
import functools
import json
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

_VERSIONED = ("torch", "torchvision", "transformers", "timm", "lightning", "pulp", "scikit-learn", "numpy")


def write_atomic(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename: readers see the old or the new file."""
    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary file path beside ``path`` to write; when the block succeeds the file is synced to disk and
    renamed over ``path``, on failure it is removed and ``path`` is untouched. For writers that stream to a path
    (``torch.save``) instead of holding the whole content in memory."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        os.chmod(tmp, 0o666 & ~_current_umask())  # mkstemp makes 0600; the result should read like any file the user writes
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _current_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; when the block succeeds it replaces ``path`` whole.

    An existing folder is moved aside first and deleted after the swap, so ``path`` is always the old folder or the
    complete new one; on failure the temporary folder is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_current_umask())  # mkdtemp makes 0700; the result should read like any folder
    try:
        yield tmp
        old = path.with_name(f".{path.name}.old-{os.getpid()}") if path.exists() else None
        if old is not None:
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _locked(path: Path):
    """Serialise appends from several processes (a lock file beside the results file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    path = Path(path)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with _locked(path):
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            raise ValueError(f"{path} does not end with a newline: it was not written by this module; fix or move it")
        write_atomic(path, old + line.encode())


def read_records(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not a JSON record ({err})") from err
    return records


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in _VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return (out.stdout.strip() or None) if out.returncode == 0 else None


def _clean(values: dict[str, Any]) -> dict[str, Any]:
    """JSON has no NaN/inf: keep them out so every record parses everywhere."""
    out = {}
    for key, value in values.items():
        if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
            value = None
        out[key] = value
    return out


def make_record(
    task: str,
    method: str,
    variant: str,
    data: str,
    quality: dict[str, float],
    cost: dict[str, Any],
    device: dict[str, Any] | str,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    return {
        "task": task,
        "method": method,
        "variant": variant,
        "data": data,
        "quality": _clean(quality),
        "cost": _clean(cost),
        "device": device if isinstance(device, dict) else {"name": device},
        "versions": package_versions(),
        "commit": git_commit(),
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "extra": extra or {},
    }
