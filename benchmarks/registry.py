"""Benchmark tasks and how packages register them.

A method package declares, in its pyproject, an entry point in the group ``benchmarks.tasks`` that names a
zero-argument function returning a list of :class:`Task`. The harness finds every installed package's tasks that way,
so adding a method never means editing the harness.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import torch

from benchmarks.claims import Claim
from benchmarks.results import append_record, make_record
from benchmarks.yardstick import Calibration, Cost

ENTRY_POINT_GROUP = "benchmarks.tasks"
# quick: minutes on a CPU (the main job); cpu: about 1.5 hours on a CPU; full: the papers' budgets, for GPU runners.
# A task without its own cpu budgets runs its quick ones.
PROFILES = ("quick", "cpu", "full")


@dataclass
class TaskContext:
    """What a running task gets from the harness: where to read data, where to write, and how to record."""

    task: Task
    profile: str
    device: torch.device
    data_dir: Path | None
    results_path: Path
    work_dir: Path
    calibration: Calibration
    threads: int
    records: list[dict[str, Any]] = field(default_factory=list)

    def device_info(self) -> dict[str, Any]:
        return {
            "type": self.device.type,
            "name": self.calibration.device_name,
            "threads": self.threads,
            "calibration": self.calibration.as_dict(),
        }

    def record(
        self, variant: str, data: str, quality: dict[str, float], cost: Cost | dict[str, Any], **extra: Any
    ) -> dict[str, Any]:
        """Append one measured variant to the results file (atomically) and return the record."""
        cost_dict = cost.as_dict() if isinstance(cost, Cost) else dict(cost)
        axes = {
            "quality_key": self.task.quality_key,
            "quality_label": self.task.quality_label,
            "throughput_key": self.task.throughput_key,
            "higher_is_better": self.task.higher_is_better,
            "quality_noise": self.task.quality_noise,
        }
        record = make_record(
            self.task.name,
            self.task.method,
            variant,
            data,
            quality,
            cost_dict,
            self.device_info(),
            {"profile": self.profile, "axes": axes, **extra},
        )
        append_record(self.results_path, record)
        self.records.append(record)
        self.log(f"recorded {variant}: " + _summary(quality, cost_dict, self.task.throughput_key))
        return record

    def log(self, msg: str) -> None:
        print(f"[{self.task.name}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Task:
    name: str
    method: str
    description: str
    run: Callable[[TaskContext], None]
    quality_key: str
    quality_label: str
    throughput_key: str = "samples_per_s"
    higher_is_better: bool = True
    # the spread of the quality metric over repeated runs (seeds, machines): `benchmarks compare` flags only drops
    # beyond it; None: any drop is flagged
    quality_noise: float | None = None
    claim: Claim | None = None  # the paper's claim this task judges (the report's claims page)


def _summary(quality: dict[str, float], cost: dict[str, Any], throughput_key: str) -> str:
    parts = [f"{k}={v:.4g}" for k, v in quality.items() if isinstance(v, int | float)]
    if throughput_key in cost:
        parts.append(f"{throughput_key}={cost[throughput_key]:.4g}")
    return ", ".join(parts)


def discover_tasks() -> tuple[list[Task], dict[str, str]]:
    """Every task that installed packages register (the harness's own sample task among them).

    Returns the tasks and, per entry-point name, the error of a package whose tasks could not be loaded, so one broken package
    neither hides the others nor passes silently.
    """
    found: list[Task] = []
    errors: dict[str, str] = {}
    for ep in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            found.extend(ep.load()())
        except Exception as err:  # noqa: BLE001 - reported to the caller, who fails the run
            errors[ep.name] = (
                f"could not load the tasks of {ep.name!r} ({ep.value}): {type(err).__name__}: {err}"
            )
    names = [t.name for t in found]
    duplicates = {n for n in names if names.count(n) > 1}
    if duplicates:
        raise RuntimeError(
            f"two registered tasks share the names {sorted(duplicates)}; task names must be unique"
        )
    return found, errors


def select_tasks(tasks: list[Task], only: list[str] | None) -> list[Task]:
    """Keep the tasks whose name or method matches one of ``only`` (``geoad`` picks every ``geoad.*`` task).

    Every entry of ``only`` must match a task: a typo is an error that lists the known names, not a silent no-op.
    """
    if not only:
        return tasks

    def matches(task: Task, name: str) -> bool:
        return task.name == name or task.method == name or task.name.startswith(name + ".")

    unknown = [name for name in only if not any(matches(t, name) for t in tasks)]
    if unknown:
        known = ", ".join(t.name for t in tasks)
        raise ValueError(f"--only {' '.join(unknown)}: no such task; known tasks: {known}")
    return [t for t in tasks if any(matches(t, name) for name in only)]
