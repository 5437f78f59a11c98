"""`puzzle cost-model-check`: random children of a space timed against the block and subblock cost models."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _run(config: dict, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "puzzle.cli", "cost-model-check", str(path), "--threads", "1", *args],
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_random_children_under_both_models(tiny_parent, tiny_run_config, tmp_path):
    out = tmp_path / "check.json"
    done = _run(tiny_run_config(tiny_parent), tmp_path, "--children", "3", "--iters", "2", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert "blocks_model: mean |error|" in done.stdout and "subblocks_model: mean |error|" in done.stdout
    result = json.loads(out.read_text())
    rows = result["rows"]
    assert [r["child"] for r in rows] == ["child-1", "child-2", "child-3"]
    blocks = set(result["costs"]["blocks"])
    for r in rows:
        assert len(r["blocks"]) == 4 and set(r["blocks"]) <= blocks  # one block of the space per layer
        assert r["speedup"] > 0 and r["blocks_model"] > 0 and r["subblocks_model"] > 0
    assert len(result["measured"]["parent"]["rounds_ms"]) == 2  # round by round, for the ratios
    assert not list(tmp_path.glob("*.tmp"))


def test_a_space_without_no_ops_is_refused(tiny_parent, tiny_run_config, tmp_path):
    config = tiny_run_config(tiny_parent)
    config["search_space"] = {**config["search_space"], "ffn_no_op": False}
    done = _run(config, tmp_path)
    assert done.returncode == 2 and "error: " in done.stderr and "ffn_no_op: true" in done.stderr
