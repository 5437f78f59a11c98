import pytest

from benchmarks.cli import main
from benchmarks.report import latest_records, pareto_front, write_report
from benchmarks.results import read_records


def test_pareto_front_hand_checked():
    pts = [(1, 0.9), (2, 0.8), (2, 0.7), (3, 0.5), (0.5, 0.85)]
    assert pareto_front(pts) == [0, 1, 3]
    # lower-is-better quality (e.g. perplexity): (2, 11) dominates (2, 12)
    assert pareto_front([(1, 10.0), (2, 12.0), (2, 11.0), (3, 20.0)], higher_is_better=False) == [0, 2, 3]


def test_harness_runs_sample_task_and_writes_report(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    assert main(["run", "--only", "yardstick", "--results", str(results), "--device", "cpu"]) == 0
    records = read_records(results)
    tasks = [r["task"] for r in records]
    assert tasks.count("calibration") == 1 and tasks.count("yardstick.sample") == 4
    sample = [r for r in records if r["task"] == "yardstick.sample"]
    assert all(r["cost"]["samples_per_s"] > 0 and 0 <= r["quality"]["accuracy"] <= 1 for r in sample)
    assert max(r["quality"]["accuracy"] for r in sample) > 0.9  # the widest MLP learns digits
    report = (tmp_path / "report.md").read_text()
    assert "## Device calibration" in report and "## yardstick.sample" in report
    assert (tmp_path / "yardstick.sample.png").stat().st_size > 10_000
    assert report.count("| mlp-w") == 4

    # a rerun replaces rows in the report instead of duplicating them
    assert main(["run", "--only", "yardstick", "--results", str(results), "--device", "cpu"]) == 0
    assert len(latest_records(read_records(results))) == 5
    assert (tmp_path / "report.md").read_text().count("| mlp-w") == 4


def test_report_on_missing_results_is_a_clear_error(tmp_path, capsys):
    assert main(["report", "--results", str(tmp_path / "none.jsonl")]) == 2
    assert "holds no results" in capsys.readouterr().err


def test_unknown_task_is_a_clear_error(tmp_path, capsys):
    assert main(["run", "--only", "nosuchtask", "--results", str(tmp_path / "r.jsonl")]) == 2
    assert "nosuchtask: no such task; known tasks: " in capsys.readouterr().err
    # one typo among real names is refused too (it used to run the real ones and drop the typo silently)
    assert main(["run", "--only", "yardstick", "yardstik", "--results", str(tmp_path / "r.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "--only yardstik: no such task" in err and "yardstick.sample" in err
    assert not (tmp_path / "r.jsonl").exists()  # nothing ran


def test_write_report_needs_records(tmp_path):
    with pytest.raises(ValueError):
        write_report(tmp_path / "r.jsonl", tmp_path)


def test_plots_share_only_records_of_the_same_split():
    from benchmarks.report import _companions

    def rec(task, data, qkey="auroc"):
        axes = {"quality_key": qkey, "throughput_key": "samples_per_s", "higher_is_better": True}
        return {"task": task, "method": "m", "data": data, "device": {"name": "cpu"}, "extra": {"axes": axes}}

    mine = [rec("m.main", "split-a")]
    others = [
        rec("m.baselines", "split-a"),
        rec("m.scoring", "split-b"),
        rec("m.other", "split-a", qkey="f1"),
    ]
    assert [r["task"] for r in _companions("m.main", mine, mine + others)] == ["m.baselines"]
