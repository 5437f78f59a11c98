"""Run benchmark tasks the same way for every method: one device, one thread count, one calibration, one file."""

from __future__ import annotations

import sys
import time
import traceback
from pathlib import Path

from benchmarks.registry import PROFILES, Task, TaskContext
from benchmarks.results import append_record, make_record
from benchmarks.yardstick import calibrate, select_device, set_threads

DEFAULT_RESULTS = Path("results/results.jsonl")


class TasksFailed(RuntimeError):
    pass


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
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    results_path = Path(results_path)
    work_root = Path(work_root) if work_root else results_path.parent / "work"
    dev = select_device(device)
    n_threads = set_threads(threads)
    calibration = calibrate(dev)
    print(
        f"device {dev} ({calibration.device_name}), {n_threads} threads: GEMM peak fp32 "
        f"{calibration.fp32_tflops:.3f} TFLOP/s, bf16 {calibration.bf16_tflops or 'n/a'} TFLOP/s",
        file=sys.stderr,
    )
    device_info = {"type": dev.type, "name": calibration.device_name, "threads": n_threads}
    append_record(
        results_path,
        make_record(
            "calibration", "yardstick", "gemm_peak", "synthetic", {},
            calibration.as_dict(), device_info, {"profile": profile},
        ),
    )
    failed = []
    for number, task in enumerate(tasks, 1):
        print(f"== [{number}/{len(tasks)}] {task.name}: {task.description}", file=sys.stderr, flush=True)
        ctx = TaskContext(
            task=task, profile=profile, device=dev, data_dir=data_dir, results_path=results_path,
            work_dir=work_root / task.name, calibration=calibration, threads=n_threads,
        )
        ctx.work_dir.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        try:
            task.run(ctx)
        except Exception:  # one broken task must not hide the others' results
            traceback.print_exc()
            failed.append(task.name)
        print(f"== {task.name}: {len(ctx.records)} records in {time.perf_counter() - start:.1f} s", file=sys.stderr)
    if failed:
        raise TasksFailed(f"tasks failed: {', '.join(failed)} (see the tracebacks above)")
