"""A busy or unstable machine must not produce a wrong child in silence: `measure` stops before writing costs, and
`evaluate`, the bench record and the report flag a child that misses its target speed-up."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from benchmarks.report import write_report
from benchmarks.results import append_record, make_record
from effinfer_core.machine import MachineLoad, sample_load
from puzzle.cli import main
from puzzle.config import load_config
from puzzle.pipeline import Pipeline
from puzzle.stages import measure
from puzzle.stages.evaluate import flag_missed_targets
from puzzle.timing import MachineBusyError, timing_spread

FREE = MachineLoad(cores=2, threads=1, others=0.1, how="test")
BUSY = MachineLoad(cores=2, threads=2, others=1.0, how="test")  # one core held elsewhere, two threads wanted


@pytest.fixture
def checked_pipe(tmp_path, tiny_parent, tiny_run_config, austen_texts):
    torch.set_num_threads(1)
    config = load_config(
        tiny_run_config(tiny_parent, measure={"warmup": 1, "iters": 3, "check_machine": True})
    )
    return Pipeline(config, tmp_path / "run", texts=austen_texts, progress=False, log=lambda m: None)


def _jumpy_timer(factors):
    """The real timer, each model's timing (its prefill and whole-generation pair of calls) scaled by the next factor:
    a machine whose speed jumps between timings."""
    from benchmarks.yardstick import time_fn

    calls = itertools.count()

    def timer(fn, device, warmup, iters):
        factor = factors[(next(calls) // 2) % len(factors)]
        return [factor * t for t in time_fn(fn, device=device, warmup=warmup, iters=iters)]

    return timer


def test_disagreeing_timings_stop_measure_before_costs_are_written(checked_pipe, monkeypatch):
    monkeypatch.setattr(measure, "sample_load", lambda threads: FREE)
    monkeypatch.setattr(
        "puzzle.timing.time_fn", _jumpy_timer([1.0, 4.0])
    )  # the parent: 1x, 4x, 1x, ... by round
    with pytest.raises(MachineBusyError, match=r"timings disagree: the slowest quarter took [0-9.]+x"):
        checked_pipe.run_stage("measure")
    assert not checked_pipe.run.path("measure/costs.json").exists()
    assert not checked_pipe.run.is_done("measure", checked_pipe.inputs_hash("measure"))


def test_steady_timings_pass(checked_pipe, monkeypatch):
    monkeypatch.setattr(measure, "sample_load", lambda threads: FREE)
    calls = itertools.cycle(
        [0.004, 0.010]
    )  # every prefill 4 ms, every whole generation 10 ms: a steady machine
    monkeypatch.setattr("puzzle.timing.time_fn", lambda fn, device, warmup, iters: [next(calls)] * iters)
    checked_pipe.run_stage("measure")
    assert checked_pipe.run.path("measure/costs.json").exists()


def test_a_loaded_machine_stops_measure_with_what_to_do(checked_pipe, monkeypatch, tiny_parent, tmp_path):
    monkeypatch.setattr(measure, "sample_load", lambda threads: BUSY)
    with pytest.raises(MachineBusyError, match=r"keep 1\.0 of 2 cores busy.*--threads 1"):
        checked_pipe.run_stage("measure")
    assert not checked_pipe.run.path("measure/costs.json").exists()


def test_cli_reports_a_busy_machine_as_one_error_line(
    tmp_path, tiny_parent, tiny_run_config, monkeypatch, capsys
):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(tiny_run_config(tiny_parent, measure={"check_machine": True})))
    monkeypatch.setattr(measure, "sample_load", lambda threads: BUSY)
    assert (
        main(["measure", "--config", str(config), "--run-dir", str(tmp_path / "run"), "--no-progress"]) == 2
    )
    err = capsys.readouterr().err
    assert "error: machine busy" in err and "measure.check_machine: false" in err


def test_timing_spread():
    assert timing_spread([10.0, 10.1, 9.9, 10.0, 10.2]) < 1.05
    assert timing_spread([10.0, 50.0, 10.0, 50.0]) > 3


def test_machine_load_arithmetic():
    assert not MachineLoad(2, 1, 1.0, "t").busy  # one core held elsewhere, one thread: fine
    assert MachineLoad(2, 2, 1.0, "t").busy
    assert "--threads 1" in MachineLoad(2, 2, 1.0, "t").advice()
    assert not MachineLoad(2, 2, 0.2, "t").busy  # a shell's worth of load
    load = sample_load(1, seconds=0.05)  # the real sampler: a sane reading on this machine
    assert load.cores >= 1 and 0 <= load.others <= load.cores + 0.5


def _results(speedup: float) -> dict:
    return {
        "parent": {"speedup": 1.0, "predicted_over_measured": 1.0},
        "puzzle-1.5x": {"speedup": speedup, "target_tokens_per_s": 30.0, "predicted_over_measured": 1.4},
    }


def test_evaluate_flags_a_child_more_than_10_percent_short_of_its_target():
    results = _results(1.01)
    lines = flag_missed_targets(results, parent_tps=20.0)  # target 30 / 20 = 1.5x
    assert results["puzzle-1.5x"]["target_speedup"] == pytest.approx(1.5)
    assert results["puzzle-1.5x"]["missed_target"] is True
    assert len(lines) == 1 and "1.01x" in lines[0] and "1.50x target" in lines[0] and "33% short" in lines[0]
    assert "missed_target" not in results["parent"]
    within = _results(1.36)  # 9% short: inside the cost model's promise
    assert (
        flag_missed_targets(within, parent_tps=20.0) == [] and within["puzzle-1.5x"]["missed_target"] is False
    )


def test_report_shows_speedup_columns_and_warns_of_a_missed_target(tmp_path):
    results = tmp_path / "results.jsonl"
    device = {"type": "cpu", "name": "test-cpu", "threads": 1}
    for variant, speedup, missed in (
        ("parent", 1.0, None),
        ("puzzle-1.5x", 1.01, True),
        ("uniform-1.5x", 1.45, False),
    ):
        append_record(
            results,
            make_record(
                "puzzle.austen",
                "puzzle",
                variant,
                "austen-persuasion-test",
                {"top1_accuracy": 0.2},
                {"tokens_per_s": 10 * speedup},
                device,
                {
                    "speedup": speedup,
                    "target_speedup": None if missed is None else 1.5,
                    "predicted_over_measured": 1.0 if missed is None else 1.4,
                    "missed_target": missed,
                    "axes": {"quality_key": "top1_accuracy", "throughput_key": "tokens_per_s"},
                },
            ),
        )
    report = write_report(results, tmp_path / "report", claims={}).read_text()
    assert "| speed-up | target | pred/meas | missed target |" in report
    assert "1.010x | 1.5x | 1.400 | **MISSED** |" in report
    assert "**Warning: puzzle-1.5x missed its speed target**: measured 1.01x against 1.50x" in report
    assert "uniform-1.5x missed" not in report
