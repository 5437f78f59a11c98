"""The one bench command every package's CLI uses: task selection, failure handling, report, work folders."""

import argparse

from benchmarks.bench_command import add_bench_arguments, run_bench
from benchmarks.registry import Task
from benchmarks.results import read_records


def _args(tmp_path, *argv):
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    return parser.parse_args(["--results", str(tmp_path / "r.jsonl"), "--device", "cpu", *argv])


def _task(name, run):
    return Task(
        name=name,
        method=name.split(".")[0],
        description=name,
        run=run,
        quality_key="acc",
        quality_label="accuracy",
    )


def test_a_failing_task_is_reported_the_others_run_and_the_report_is_written(tmp_path, capsys):
    def good(ctx):
        ctx.record("v1", "d", {"acc": 0.5}, {"samples_per_s": 10.0})

    def bad(ctx):
        raise RuntimeError("boom")

    status = run_bench(_args(tmp_path), [_task("m.bad", bad), _task("m.good", good)])
    out = capsys.readouterr()
    assert status == 1
    assert "RuntimeError: boom" in out.err and "tasks failed: m.bad" in out.err
    assert [r["variant"] for r in read_records(tmp_path / "r.jsonl") if r["task"] == "m.good"] == ["v1"]
    assert "## m.good" in (tmp_path / "report.md").read_text()
    assert "m.good: 1 variants, best acc 0.5 (v1), fastest 10 samples_per_s (v1)" in out.err
    assert f"report: {tmp_path / 'report.md'}" in out.out


def test_each_profile_works_in_its_own_folder(tmp_path):
    """Defect: every profile used results/work/<task>, so a full run reused a quick run's artifacts."""
    seen = []

    def remember(ctx):
        seen.append(ctx.work_dir)
        ctx.record("v", "d", {"acc": 1.0}, {"samples_per_s": 1.0})

    tasks = [_task("m.t", remember)]
    assert run_bench(_args(tmp_path, "--profile", "quick"), tasks) == 0
    assert run_bench(_args(tmp_path, "--profile", "cpu"), tasks) == 0
    assert seen == [tmp_path / "work" / "quick" / "m.t", tmp_path / "work" / "cpu" / "m.t"]
    # library messages went to a log file, and the next run's estimate comes from this one's duration
    assert (tmp_path / "bench.log").exists() and (tmp_path / "work" / "cpu" / "durations.json").exists()


def test_unknown_task_names_run_nothing(tmp_path, capsys):
    ran = []
    status = run_bench(_args(tmp_path, "--only", "m.t", "m.typo"), [_task("m.t", ran.append)])
    assert status == 2 and ran == []
    assert "--only m.typo: no such task; known tasks: m.t" in capsys.readouterr().err
