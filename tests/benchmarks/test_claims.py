"""The claims page: generated from the results file, one run's records, at the top of the report."""

import json

import pytest

from benchmarks.claims import Claim, Verdict, pair, record
from benchmarks.report import write_report


def _rec(variant, acc, speed, *, profile="quick", time="2026-12-02T10:00:00+00:00", task="m.t"):
    axes = {"quality_key": "acc", "throughput_key": "samples_per_s", "higher_is_better": True}
    return {
        "task": task,
        "method": "m",
        "variant": variant,
        "data": "d",
        "device": {"name": "cpu-x"},
        "quality": {"acc": acc},
        "cost": {"samples_per_s": speed, "frac_of_peak": 0.25},
        "extra": {"axes": axes, "profile": profile},
        "time": time,
    }


def _judge(records):
    method, baseline = record(records, "fast"), record(records, "base")
    p = pair(method, baseline, "acc", "samples_per_s")
    holds = p["quality"][0] >= 0.95 * p["quality"][1] and p["throughput"][0] >= 1.5 * p["throughput"][1]
    return Verdict("holds" if holds else "does not hold", **p)


CLAIM = Claim("1.5x faster at 95% of the quality", "the base model", _judge)


def test_claims_page_is_at_the_top_and_judges_the_newest_run(tmp_path):
    results = tmp_path / "r.jsonl"
    old_full_run = [
        _rec("fast", 0.5, 300.0, profile="full", time="2026-12-01T00:00:00+00:00"),
        _rec("base", 0.9, 100.0, profile="full", time="2026-12-01T00:00:00+00:00"),
    ]
    quick_run = [_rec("fast", 0.88, 200.0), _rec("base", 0.9, 100.0)]
    results.write_text("".join(json.dumps(r) + "\n" for r in old_full_run + quick_run))
    text = write_report(results, tmp_path, claims={"m.t": CLAIM}).read_text()
    assert text.index("## Claims") < text.index("## m.t")
    row = next(line for line in text.splitlines() if line.startswith("| [m.t]"))
    # the quick run's pair (0.88 / 0.9 = 0.978 retained, 2x faster), not the older full run's
    assert "fast vs base | 0.88 / 0.9 | 0.978x | 2x | 25.0% |" in row and "**holds**" in row


def test_a_claim_that_fails_says_so_and_tasks_without_records_are_left_out(tmp_path):
    results = tmp_path / "r.jsonl"
    results.write_text(
        "".join(json.dumps(r) + "\n" for r in [_rec("fast", 0.5, 120.0), _rec("base", 0.9, 100.0)])
    )
    text = write_report(results, tmp_path, claims={"m.t": CLAIM, "other.task": CLAIM}).read_text()
    assert "**does not hold**" in text and "other.task" not in text


def test_each_judge_sees_its_own_records_once(tmp_path):
    """Two claimed tasks in one run: each judge gets its task's records (and those it uses), none twice."""
    seen = {}

    def judge_for(task):
        def judge(records):
            seen[task] = sorted((r["task"], r["variant"]) for r in records)
            return _judge(records)

        return judge

    results = tmp_path / "r.jsonl"
    recs = [_rec("fast", 0.9, 200.0), _rec("base", 0.9, 100.0), _rec("base", 0.5, 1.0, task="o.t")]
    results.write_text("".join(json.dumps(r) + "\n" for r in recs))
    claims = {
        "m.t": Claim("c", "b", judge_for("m.t")),
        "o.t": Claim("c", "b", judge_for("o.t"), uses=("m.t",)),
    }
    write_report(results, tmp_path, claims=claims)
    assert seen["m.t"] == [("m.t", "base"), ("m.t", "fast")]
    assert seen["o.t"] == [("m.t", "base"), ("m.t", "fast"), ("o.t", "base")]


def test_a_verdict_must_be_one_of_the_four():
    with pytest.raises(ValueError, match="verdict must be one of"):
        Verdict("sort of", "a", "b", (1.0, 1.0), (1.0, 1.0))
