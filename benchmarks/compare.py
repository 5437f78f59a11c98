"""`python -m benchmarks compare OLD.jsonl NEW.jsonl`: did anything get worse since the last good run?

Records are matched by (task, variant, data, device name), the newest record of each in either file. A pair is a
*regression* when the quality metric of its task (``extra.axes.quality_key``) moved the wrong way by more than the
task's noise (``extra.axes.quality_noise``: the spread of that metric over repeated runs, stated per task; ``--noise
TASK=VALUE`` overrides), or when its throughput (``extra.axes.throughput_key``) fell by more than ``--max-slowdown``
(a fraction). A record of OLD that NEW lacks is *missing* (a task that crashed or a variant that went away) and counts
as a regression; a record only NEW has is *new*. Moves beyond the noise the right way are *improvements*.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import latest_records
from benchmarks.results import read_records

DEFAULT_NOISE = 0.0  # a task that states no noise: any drop in quality is reported
DEFAULT_MAX_SLOWDOWN = 0.25  # shared CPU VMs drift 10-25% within an hour; GPU runners can use less


@dataclass
class Change:
    key: tuple[str, str, str, str]  # task, variant, data, device
    kind: str  # "regression", "improvement", "missing", "new", "same"
    what: str  # one line: which figure moved and by how much


def _key(record: dict[str, Any]) -> tuple[str, str, str, str]:
    return record["task"], record["variant"], record["data"], str(record["device"].get("name"))


def _axes(record: dict[str, Any]) -> dict[str, Any]:
    return record.get("extra", {}).get("axes", {})


def compare_records(
    old: list[dict[str, Any]],
    new: list[dict[str, Any]],
    *,
    max_slowdown: float = DEFAULT_MAX_SLOWDOWN,
    noise: dict[str, float] | None = None,
) -> list[Change]:
    """One Change per record key of either file (calibration records left out)."""
    before = {_key(r): r for r in latest_records(old) if r["task"] != "calibration"}
    after = {_key(r): r for r in latest_records(new) if r["task"] != "calibration"}
    changes = []
    for key in sorted(before.keys() | after.keys()):
        if key not in after:
            changes.append(Change(key, "missing", "in OLD, not in NEW"))
        elif key not in before:
            changes.append(Change(key, "new", "in NEW only"))
        else:
            changes.append(_compare_pair(key, before[key], after[key], max_slowdown, noise or {}))
    return changes


def _compare_pair(
    key: tuple[str, str, str, str],
    old: dict[str, Any],
    new: dict[str, Any],
    max_slowdown: float,
    noise: dict[str, float],
) -> Change:
    axes = _axes(new)
    worse, better = [], []
    qkey = axes.get("quality_key")
    q_old, q_new = old["quality"].get(qkey), new["quality"].get(qkey)
    if qkey and q_old is not None and q_new is not None:
        tolerance = noise.get(key[0], axes.get("quality_noise") or DEFAULT_NOISE)
        gain = (q_new - q_old) * (1 if axes.get("higher_is_better", True) else -1)
        text = f"{qkey} {q_old:.4g} -> {q_new:.4g} (noise {tolerance:.3g})"
        if gain < -tolerance:
            worse.append(text)
        elif gain > tolerance:
            better.append(text)
    tkey = axes.get("throughput_key", "samples_per_s")
    t_old, t_new = old["cost"].get(tkey), new["cost"].get(tkey)
    if t_old and t_new is not None:
        ratio = t_new / t_old
        text = f"{tkey} {t_old:.4g} -> {t_new:.4g} ({ratio:.2f}x)"
        if ratio < 1 - max_slowdown:
            worse.append(text)
        elif ratio > 1 / (1 - max_slowdown):
            better.append(text)
    if worse:
        return Change(key, "regression", "; ".join(worse + better))
    if better:
        return Change(key, "improvement", "; ".join(better))
    return Change(key, "same", "within noise")


def markdown_summary(changes: list[Change], old_path: Path, new_path: Path, max_slowdown: float) -> str:
    counts = {
        kind: sum(c.kind == kind for c in changes) for kind in ("regression", "missing", "improvement", "new")
    }
    verdict = "REGRESSION" if counts["regression"] or counts["missing"] else "no regression"
    lines = [
        f"# Benchmark comparison: {verdict}",
        "",
        f"`{old_path}` -> `{new_path}`: {len(changes)} records; "
        + ", ".join(f"{n} {kind}" for kind, n in counts.items())
        + f". Throughput threshold: {max_slowdown:.0%} slower; quality threshold: each task's stated noise.",
        "",
        "| | task | variant | data | device | change |",
        "|---|---|---|---|---|---|",
    ]
    order = {"regression": 0, "missing": 1, "improvement": 2, "new": 3, "same": 4}
    mark = {"regression": "❌", "missing": "❌", "improvement": "✅", "new": "➕", "same": ""}
    for c in sorted(changes, key=lambda c: (order[c.kind], c.key)):
        lines.append(f"| {mark[c.kind]} {c.kind} | " + " | ".join(c.key) + f" | {c.what} |")
    return "\n".join(lines) + "\n"


def compare_files(
    old_path: Path, new_path: Path, *, max_slowdown: float, noise: dict[str, float] | None = None
) -> tuple[bool, str]:
    """(True when NEW has a regression or a missing record, the Markdown summary)."""
    for path in (old_path, new_path):
        if not Path(path).exists():
            raise FileNotFoundError(f"results file {path} does not exist")
    changes = compare_records(
        read_records(old_path), read_records(new_path), max_slowdown=max_slowdown, noise=noise
    )
    failed = any(c.kind in ("regression", "missing") for c in changes)
    return failed, markdown_summary(changes, old_path, new_path, max_slowdown)
