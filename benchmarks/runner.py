"""Run benchmark tasks the same way for every method: one device, one thread count, one calibration, one file.

Each task works in ``<work root>/<profile>/<task>`` (default work root: ``work/`` beside the results file), so a
``full`` run never reuses what a ``quick`` run left; inside it, the task's own run folders key every step by its
inputs, so a changed setting recomputes what depends on it. Library chatter (Lightning banners, repeated warnings)
goes to ``bench.log`` beside the results; the screen gets one line per task and stage, with elapsed time and an
estimate taken from the last run of the same task and profile.
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from benchmarks.registry import PROFILES, Task, TaskContext
from benchmarks.results import append_record, make_record
from benchmarks.yardstick import calibrate, select_device, set_threads
from effinfer_core.atomic import write_atomic
from effinfer_core.machine import sample_load
from effinfer_core.progress import library_output_to

DEFAULT_RESULTS = Path("results/results.jsonl")
DURATIONS = (
    "durations.json"  # seconds each task took last time, per work root and profile: the next run's estimate
)


class TasksFailed(RuntimeError):
    pass


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def run_tasks(
    tasks: list[Task],
    *,
    profile: str,
    device: str | None,
    results_path: Path,
    data_dir: Path | None,
    work_root: Path | None = None,
    threads: int | None = None,
) -> None:
    """Calibrate the device, then run each task; a failing task is reported and the others still run."""
    with library_output_to(Path(results_path).parent / "bench.log") as log_file:
        _run_tasks(tasks, profile, device, Path(results_path), data_dir, work_root, threads, log_file)


def _run_tasks(
    tasks: list[Task],
    profile: str,
    device: str | None,
    results_path: Path,
    data_dir: Path | None,
    work_root: Path | None,
    threads: int | None,
    log_file: Path,
) -> None:
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    work = (Path(work_root) if work_root else results_path.parent / "work") / profile
    dev = select_device(device)
    n_threads = set_threads(threads)
    if dev.type == "cpu":  # said before anything is timed: a busy machine distorts every figure of the run
        load = sample_load(n_threads)
        print(
            f"{load.describe()}" + (f"; timings will be distorted: {load.advice()}" if load.busy else ""),
            file=sys.stderr,
        )
    calibration = calibrate(dev)
    print(
        f"device {dev} ({calibration.device_name}), {n_threads} threads: GEMM peak fp32 "
        f"{calibration.fp32_tflops:.3f} TFLOP/s, bf16 {calibration.bf16_tflops or 'n/a'} TFLOP/s; "
        f"library messages go to {log_file}",
        file=sys.stderr,
    )
    device_info: dict[str, Any] = {"type": dev.type, "name": calibration.device_name, "threads": n_threads}
    if dev.type == "cpu":
        device_info["busy_cores_at_start"] = round(load.others, 2)  # other processes' load when the run began
    append_record(
        results_path,
        make_record(
            "calibration",
            "yardstick",
            "gemm_peak",
            "synthetic",
            {},
            calibration.as_dict(),
            device_info,
            {"profile": profile},
        ),
    )
    durations_path = work / DURATIONS
    durations = json.loads(durations_path.read_text()) if durations_path.exists() else {}
    failed = []
    start_all = time.perf_counter()
    for number, task in enumerate(tasks, 1):
        last = durations.get(task.name)
        estimate = f", ~{_minutes(last)} last time" if last else ""
        print(
            f"[{number}/{len(tasks)}] {task.name}: {task.description}{estimate}", file=sys.stderr, flush=True
        )
        ctx = TaskContext(
            task=task,
            profile=profile,
            device=dev,
            data_dir=data_dir,
            results_path=results_path,
            work_dir=work / task.name,
            calibration=calibration,
            threads=n_threads,
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            task.run(ctx)
        except Exception:  # one broken task must not hide the others' results
            traceback.print_exc()
            failed.append(task.name)
        seconds = time.perf_counter() - start
        if task.name not in failed:
            durations[task.name] = seconds
            write_atomic(durations_path, json.dumps(durations, indent=1, sort_keys=True))
        left = sum(durations.get(t.name, 0.0) for t in tasks[number:])
        remaining = f", ~{_minutes(left)} left" if left else ""
        status = "FAILED" if task.name in failed else f"{len(ctx.records)} records"
        print(
            f"[{number}/{len(tasks)}] {task.name}: {status} in {_minutes(seconds)} "
            f"({_minutes(time.perf_counter() - start_all)} so far{remaining})",
            file=sys.stderr,
            flush=True,
        )
    if failed:
        raise TasksFailed(f"tasks failed: {', '.join(failed)} (see the tracebacks above)")
