"""`puzzle run` as a two-process Lightning DDP run on the CPU: Lightning starts the second process by running the
same command again; rank 0 runs, writes and logs every stage, rank 1 joins the BLD and GKD fits and writes nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.data.austen import TITLES
from benchmarks.data.source import MANIFEST
from effinfer_core.run_folder import RunFolder, file_hash
from puzzle.pipeline import STAGES


def _austen_root(root: Path, texts: dict[str, str]) -> Path:
    """A data root whose `austen` source holds the test texts (what `effinfer-data fetch austen` would leave)."""
    folder = root / "austen"
    folder.mkdir(parents=True)
    for key, title in TITLES.items():
        (folder / f"{key}.txt").write_text(texts[title], encoding="utf-8")
    (folder / MANIFEST).write_text("{}")
    return root


def test_ddp_run_on_two_processes(tmp_path, tiny_parent, tiny_run_config, austen_texts):
    config = tiny_run_config(
        tiny_parent, data_dir=str(_austen_root(tmp_path / "data", austen_texts)), targets=["1.5x"]
    )
    config_path = tmp_path / "config.json"
    config_path.write_text(json.dumps(config))
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "puzzle.cli",
        "run",
        str(config_path),
        "--run-dir",
        str(run_dir),
        "--accelerator",
        "cpu",
        "--devices",
        "2",
        "--strategy",
        "ddp",
        "--threads",
        "1",
        "--no-progress",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    log = proc.stderr
    assert "GLOBAL_RANK: 1" in log  # the fits did run on two processes

    run = RunFolder(run_dir)
    manifest = run.manifest()
    assert set(manifest["stages"]) == set(STAGES)
    for entry in manifest["stages"].values():  # what rank 0 recorded is what is on disk
        for rel, digest in entry["artifacts"].items():
            assert file_hash(run.path(rel)) == digest
    for stage in STAGES:  # logged by rank 0 alone, and rank 1 ran none of the other stages
        assert log.count(f"[{stage}] running (") == 1, (stage, log[-4000:])
    bld_budget, gkd_budget = config["bld"]["token_budget"], config["gkd"]["token_budget"]
    step_tokens = 2 * 2 * 16  # per step: two ranks, one batch of 2 x 16 tokens each
    bld = run.read_json(
        "bld/bld.json"
    )  # the budget counts the tokens of both ranks, split evenly between them
    assert (
        bld["tokens"] == bld["steps"] * step_tokens and bld_budget - step_tokens < bld["tokens"] <= bld_budget
    )
    for name in run.read_json("search/solutions.json"):
        gkd = run.read_json(f"gkd/{name}/gkd.json")
        assert gkd["tokens"] == gkd["steps"] * step_tokens
        assert (
            gkd_budget - step_tokens < gkd["tokens"] <= gkd_budget
        )  # the ranks split the budget's batches evenly
        assert len(gkd["history"]) == gkd["steps"]
        assert log.count(f"[gkd] {name} step {gkd['steps']}/{gkd['steps']} (100%)") == 1
    assert not list(run_dir.rglob(".*.tmp"))  # no half-written folder left by a second writer
