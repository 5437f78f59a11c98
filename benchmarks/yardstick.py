"""The one inference-cost yardstick every method in this repo is judged by.

Definitions (the same for every task, so numbers are comparable across methods):

- a *call* is one forward of the model (or pipeline function) on one batch of ``batch_size`` samples;
- latency = wall time of one call, device-synchronised before and after, measured after ``warmup`` calls;
- samples/s = batch_size * iters / (sum of the timed latencies); tokens/s = samples/s * tokens_per_sample;
- FLOPs/sample = FLOPs of one call counted by ``torch.utils.flop_counter`` / batch_size (a multiply-add counts as 2);
- fraction of peak = achieved FLOP/s / the device's GEMM peak for the dtype the call ran in, measured by
  ``calibrate`` in the same process (so a result says how well it used *this* device, not a datasheet figure);
- peak memory of one call: CUDA = ``max_memory_allocated`` over the allocation before it; CPU (Linux) = growth of the
  process's peak resident set over its level before the call.

All timed calls run under ``torch.inference_mode`` and, where the device supports it, bf16 autocast.
"""

from __future__ import annotations

import contextlib
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def select_device(name: str | None = None) -> torch.device:
    """``None``/``"auto"`` picks CUDA when present, else CPU; anything else is passed to ``torch.device``."""
    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available here; use --device cpu or auto"
        )
    return device


def set_threads(threads: int | None) -> int:
    """Fix the CPU thread count (timings drift when torch picks it per call site). Returns the count in force."""
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def bf16_supported(device: torch.device | str) -> bool:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        # oneDNN runs bf16 fast only on CPUs with native bf16 (AVX512-BF16 / AMX); elsewhere it emulates it slowly.
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def autocast(device: torch.device | str, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast where the device supports it, a no-op context otherwise."""
    device = torch.device(device)
    if enabled and bf16_supported(device):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _call(fn: Callable[..., Any], batch: Any) -> Any:
    if isinstance(batch, tuple):
        return fn(*batch)
    if isinstance(batch, dict):
        return fn(**batch)
    return fn(batch)


def time_fn(
    fn: Callable[[], Any], *, device: torch.device | str, warmup: int = 3, iters: int = 10
) -> list[float]:
    """Seconds per call of ``fn`` for ``iters`` timed calls after ``warmup`` untimed ones, synchronised each time."""
    if iters < 1:
        raise ValueError("iters must be >= 1")
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(iters):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def count_flops(fn: Callable[[], Any]) -> int:
    """Total FLOPs of one call of ``fn`` (matmuls and convolutions, as torch's flop counter defines them)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class Calibration:
    """The device's measured dense GEMM peak, in TFLOP/s, for fp32 and (where supported) bf16."""

    device_name: str
    fp32_tflops: float
    bf16_tflops: float | None

    def peak_for(self, dtype: torch.dtype) -> float | None:
        return self.bf16_tflops if dtype == torch.bfloat16 else self.fp32_tflops

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


_CALIBRATIONS: dict[str, Calibration] = {}


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "cpu":
        return _cpu_model_name()
    return str(device)


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def _gemm_tflops(device: torch.device, dtype: torch.dtype, n: int, iters: int) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    times = time_fn(lambda: torch.mm(a, b), device=device, warmup=2, iters=iters)
    return 2 * n**3 / min(times) / 1e12  # best of: a peak, not a typical figure


def calibrate(device: torch.device | str) -> Calibration:
    """Measure the square-GEMM peak of ``device`` once per process (and thread count) and cache it."""
    device = torch.device(device)
    key = f"{device}:{torch.get_num_threads()}"
    if key not in _CALIBRATIONS:
        n, iters = (8192, 20) if device.type == "cuda" else (1024, 10)
        with torch.inference_mode():
            fp32 = _gemm_tflops(device, torch.float32, n, iters)
            bf16 = _gemm_tflops(device, torch.bfloat16, n, iters) if bf16_supported(device) else None
        _CALIBRATIONS[key] = Calibration(
            device_name(device), round(fp32, 4), None if bf16 is None else round(bf16, 4)
        )
    return _CALIBRATIONS[key]


@dataclass(frozen=True)
class Cost:
    samples_per_s: float
    tokens_per_s: float | None
    latency_p50_ms: float
    latency_p90_ms: float
    peak_mem_mb: float | None
    flops_per_sample: float | None
    params: int | None
    batch_size: int
    dtype: str
    achieved_tflops: float | None
    frac_of_peak: float | None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


class _PeakMemory:
    """Peak memory of the block it wraps, in MiB: the CUDA allocator's peak, or on Linux the growth of the process's
    peak resident set (VmHWM, reset through /proc/self/clear_refs). ``None`` where neither can be read."""

    def __init__(self, device: torch.device):
        self.device = device
        self.peak_mb: float | None = None

    @contextlib.contextmanager
    def track(self) -> Iterator[None]:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            base = torch.cuda.memory_allocated(self.device)
            yield
            self.peak_mb = (torch.cuda.max_memory_allocated(self.device) - base) / 2**20
            return
        rss: int | None = _proc_status_kb("VmRSS") if _reset_rss_peak() else None
        yield
        if rss is not None:
            self.peak_mb = max(0.0, (_proc_status_kb("VmHWM") - rss) / 1024)


def _reset_rss_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # Linux: resets VmHWM (the peak RSS) to the current RSS
        return True
    except OSError:
        return False


def _proc_status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {field}")


def measure(
    model_or_fn: nn.Module | Callable[..., Any],
    make_batch: Callable[[], Any],
    *,
    batch_size: int,
    device: torch.device | str,
    tokens_per_sample: int | None = None,
    warmup: int = 3,
    iters: int = 10,
    use_autocast: bool | None = None,
    flops: bool = True,
) -> Cost:
    """Measure one model (or any callable pipeline) on one batch shape with the repo's single definition of cost.

    ``make_batch`` is called once, outside the timed region; the batch it returns is already on ``device``.
    """
    device = torch.device(device)
    use_autocast = bf16_supported(device) if use_autocast is None else use_autocast
    if isinstance(model_or_fn, nn.Module):
        model_or_fn.eval()
    batch = make_batch()

    def call() -> Any:
        with autocast(device, use_autocast):
            return _call(model_or_fn, batch)

    memory = _PeakMemory(device)
    with torch.inference_mode():
        total_flops = count_flops(call) if flops else None
        times = time_fn(call, device=device, warmup=warmup, iters=iters)
        with memory.track():  # one extra call: memory tracking stays out of the timed ones
            call()

    samples_per_s = batch_size * len(times) / sum(times)
    ms = sorted(t * 1000 for t in times)
    dtype = torch.bfloat16 if use_autocast and bf16_supported(device) else torch.float32
    flops_per_sample = total_flops / batch_size if total_flops else None
    achieved = flops_per_sample * samples_per_s / 1e12 if flops_per_sample else None
    peak = calibrate(device).peak_for(dtype)
    return Cost(
        samples_per_s=samples_per_s,
        tokens_per_s=samples_per_s * tokens_per_sample if tokens_per_sample else None,
        latency_p50_ms=statistics.median(ms),
        latency_p90_ms=ms[min(len(ms) - 1, int(round(0.9 * (len(ms) - 1))))],
        peak_mem_mb=memory.peak_mb,
        flops_per_sample=flops_per_sample,
        params=count_params(model_or_fn) if isinstance(model_or_fn, nn.Module) else None,
        batch_size=batch_size,
        dtype=str(dtype).removeprefix("torch."),
        achieved_tflops=achieved,
        frac_of_peak=achieved / peak if achieved and peak else None,
    )
