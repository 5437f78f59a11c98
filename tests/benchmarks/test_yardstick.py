import time

import pytest
import torch
from torch import nn

from benchmarks.yardstick import (
    calibrate,
    count_flops,
    count_params,
    measure,
    select_device,
    time_fn,
)


def test_flops_of_linear_equal_formula():
    batch, fan_in, fan_out = 8, 32, 48
    layer = nn.Linear(fan_in, fan_out)
    x = torch.randn(batch, fan_in)
    assert count_flops(lambda: layer(x)) == 2 * batch * fan_in * fan_out


def test_flops_of_conv_equal_formula():
    batch, c_in, c_out, k, size = 2, 3, 16, 3, 20
    conv = nn.Conv2d(c_in, c_out, k, padding=1)
    x = torch.randn(batch, c_in, size, size)
    assert count_flops(lambda: conv(x)) == 2 * batch * c_out * size * size * c_in * k * k


def test_flops_of_matmul_chain_and_params():
    model = nn.Sequential(nn.Linear(10, 20), nn.ReLU(), nn.Linear(20, 5))
    x = torch.randn(4, 10)
    assert count_flops(lambda: model(x)) == 2 * 4 * (10 * 20 + 20 * 5)
    assert count_params(model) == 10 * 20 + 20 + 20 * 5 + 5


def test_time_fn_respects_warmup():
    calls = []

    def slow_then_fast():
        calls.append(1)
        time.sleep(0.05 if len(calls) <= 3 else 0.001)

    warm = time_fn(slow_then_fast, device="cpu", warmup=3, iters=5)
    assert len(calls) == 8 and len(warm) == 5
    assert max(warm) < 0.03  # the three slow calls were not timed

    calls.clear()
    cold = time_fn(slow_then_fast, device="cpu", warmup=0, iters=5)
    assert cold[0] >= 0.05


def test_measure_reports_positive_consistent_figures():
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
    cost = measure(
        model,
        lambda: torch.randn(32, 64),
        batch_size=32,
        device="cpu",
        tokens_per_sample=7,
        warmup=2,
        iters=8,
        use_autocast=False,
    )
    assert cost.samples_per_s > 0 and cost.tokens_per_s == pytest.approx(7 * cost.samples_per_s)
    assert 0 < cost.latency_p50_ms <= cost.latency_p90_ms
    assert cost.flops_per_sample == 2 * (64 * 128 + 128 * 10)
    assert cost.params == count_params(model)
    assert cost.dtype == "float32" and 0 < cost.frac_of_peak
    assert cost.achieved_tflops == pytest.approx(cost.flops_per_sample * cost.samples_per_s / 1e12)


def test_measure_calls_with_tuple_and_dict_batches():
    seen = []
    measure(
        lambda a, b: seen.append((a, b)),
        lambda: (1, 2),
        batch_size=1,
        device="cpu",
        warmup=0,
        iters=1,
        flops=False,
    )
    measure(
        lambda a, b: seen.append((a, b)),
        lambda: {"a": 3, "b": 4},
        batch_size=1,
        device="cpu",
        warmup=0,
        iters=1,
        flops=False,
    )
    assert seen[0] == (1, 2) and seen[-1] == (3, 4) and set(seen) == {(1, 2), (3, 4)}


def test_calibration_is_positive_and_cached():
    first = calibrate("cpu")
    assert first.fp32_tflops > 0
    assert calibrate("cpu") is first


def test_device_selection():
    assert select_device("cpu").type == "cpu"
    assert select_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            select_device("cuda")
