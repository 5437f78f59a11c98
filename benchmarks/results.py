"""Results records: one JSON object per measured variant, kept in a JSONL file that is only ever replaced whole.

An append writes the old content plus the new line to a temporary file in the same folder and renames it over the
original, so an interrupted write leaves either the old file or the new one, never a partial line.
"""

from __future__ import annotations

import functools
import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from effinfer_core.atomic import locked, write_atomic

_VERSIONED = ("torch", "torchvision", "transformers", "timm", "lightning", "pulp", "scikit-learn", "numpy")


def append_record(path: str | Path, record: dict[str, Any]) -> None:
    path = Path(path)
    line = json.dumps(record, sort_keys=True, allow_nan=False) + "\n"
    with locked(path):
        old = path.read_bytes() if path.exists() else b""
        if old and not old.endswith(b"\n"):
            raise ValueError(
                f"{path} does not end with a newline: it was not written by this module; fix or move it"
            )
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
