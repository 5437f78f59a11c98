"""`python -m benchmarks compare`: regressions, improvements, noise and missing records on hand-made results files."""

import json

from benchmarks.cli import main
from benchmarks.compare import compare_records


def _rec(variant, acc, speed, *, task="m.t", noise=0.01, higher=True, device="cpu-x"):
    axes = {
        "quality_key": "acc",
        "throughput_key": "samples_per_s",
        "higher_is_better": higher,
        "quality_noise": noise,
    }
    return {
        "task": task,
        "method": "m",
        "variant": variant,
        "data": "d",
        "device": {"name": device},
        "quality": {"acc": acc},
        "cost": {"samples_per_s": speed},
        "extra": {"axes": axes},
    }


def _write(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


OLD = [
    _rec("steady", 0.90, 100.0),
    _rec("worse", 0.90, 100.0),
    _rec("slower", 0.90, 100.0),
    _rec("better", 0.80, 100.0),
    _rec("gone", 0.5, 10.0),
]
NEW = [
    _rec("steady", 0.895, 90.0),  # within noise (0.01) and within the 25% throughput threshold
    _rec("worse", 0.85, 100.0),  # quality drop of 5 points > noise
    _rec("slower", 0.90, 50.0),  # half the throughput
    _rec("better", 0.90, 200.0),  # better on both axes
    _rec("fresh", 0.7, 1.0),
]


def test_each_kind_of_change_is_told_apart():
    kinds = {c.key[1]: c.kind for c in compare_records(OLD, NEW)}
    assert kinds == {
        "steady": "same",
        "worse": "regression",
        "slower": "regression",
        "better": "improvement",
        "gone": "missing",
        "fresh": "new",
    }


def test_noise_and_direction_are_per_task():
    # lower is better (e.g. perplexity): a rise is the regression
    assert compare_records([_rec("v", 10.0, 1, higher=False)], [_rec("v", 10.5, 1, higher=False)])[
        0
    ].kind == ("regression")
    # the same drop inside a noisier task's spread is not flagged
    assert compare_records([_rec("v", 0.9, 1, noise=0.1)], [_rec("v", 0.85, 1, noise=0.1)])[0].kind == "same"
    # another device's record is another record, not a comparison
    kinds = sorted(c.kind for c in compare_records([_rec("v", 0.9, 1)], [_rec("v", 0.1, 1, device="gpu")]))
    assert kinds == ["missing", "new"]


def test_the_command_exits_nonzero_on_a_regression_and_writes_markdown(tmp_path, capsys):
    old, new = _write(tmp_path / "old.jsonl", OLD), _write(tmp_path / "new.jsonl", NEW)
    assert main(["compare", str(old), str(new), "--out", str(tmp_path / "cmp.md")]) == 1
    summary = (tmp_path / "cmp.md").read_text()
    assert summary.startswith("# Benchmark comparison: REGRESSION")
    assert "| ❌ regression | m.t | slower | d | cpu-x | samples_per_s 100 -> 50 (0.50x) |" in summary
    assert "| ❌ missing | m.t | gone |" in summary and "| ✅ improvement | m.t | better |" in summary
    # the same run against itself is clean, and a wider throughput threshold or noise can be given
    assert main(["compare", str(old), str(old)]) == 0
    steady = _write(tmp_path / "steady.jsonl", [r for r in NEW if r["variant"] in ("steady", "slower")])
    base = _write(tmp_path / "base.jsonl", [r for r in OLD if r["variant"] in ("steady", "slower")])
    assert main(["compare", str(base), str(steady)]) == 1
    assert main(["compare", str(base), str(steady), "--max-slowdown", "0.6"]) == 0
    capsys.readouterr()
    assert main(["compare", str(base), str(steady), "--noise", "m.t=abc"]) == 2
    assert "--noise takes TASK=VALUE" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "none.jsonl"), str(new)]) == 2
