import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from benchmarks.results import append_record, make_record, read_records
from effinfer_core import atomic


def _record(i: int) -> dict:
    return make_record("t", "m", f"v{i}", "d", {"acc": 0.5}, {"samples_per_s": float(i)}, "cpu")


def test_record_fields_and_round_trip(tmp_path):
    path = tmp_path / "r.jsonl"
    append_record(path, _record(1))
    append_record(path, _record(2))
    got = read_records(path)
    assert [r["variant"] for r in got] == ["v1", "v2"]
    for key in (
        "task",
        "method",
        "variant",
        "data",
        "quality",
        "cost",
        "device",
        "versions",
        "commit",
        "time",
    ):
        assert key in got[0]
    assert "torch" in got[0]["versions"]


def test_nan_becomes_null(tmp_path):
    rec = make_record("t", "m", "v", "d", {"acc": float("nan")}, {}, "cpu")
    assert rec["quality"]["acc"] is None
    append_record(tmp_path / "r.jsonl", rec)  # would raise on NaN (allow_nan=False)


def test_interrupted_append_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "r.jsonl"
    append_record(path, _record(1))
    before = path.read_bytes()

    def interrupted(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        append_record(path, _record(2))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.jsonl", "r.jsonl.lock"]


def test_killed_writer_never_leaves_a_partial_line(tmp_path):
    path = tmp_path / "r.jsonl"
    script = textwrap.dedent(f"""
        from benchmarks.results import append_record
        big = {{"blob": "x" * 200_000}}
        i = 0
        while True:
            append_record({str(path)!r}, {{"i": i, **big}})
            i += 1
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.monotonic() + 60
        while (not path.exists() or path.stat().st_size < 2_000_000) and time.monotonic() < deadline:
            assert proc.poll() is None, "the writer died on its own"
            time.sleep(0.05)
    finally:
        os.kill(proc.pid, signal.SIGKILL)  # mid-write, most likely: each append rewrites megabytes
        proc.wait()
    lines = path.read_bytes().split(b"\n")
    assert lines[-1] == b""  # ends on a newline
    numbers = [json.loads(line)["i"] for line in lines[:-1]]
    assert numbers == list(range(len(numbers))) and len(numbers) >= 2


def test_foreign_file_without_newline_is_refused(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"a": 1}')
    with pytest.raises(ValueError, match="newline"):
        append_record(path, _record(1))
