"""`puzzle search --sweep`: the Pareto front of the search over a budget range, on a tiny run folder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from puzzle.cli import main
from puzzle.config import load_config
from puzzle.pareto import parse_budgets
from puzzle.pipeline import Pipeline


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory, tiny_parent, tiny_run_config, austen_texts):
    """A run folder with library .. measure done (what the sweep reads) and its config."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("sweep_run")
    config = tiny_run_config(tiny_parent)
    pipe = Pipeline(load_config(config), root, texts=austen_texts, progress=False, log=lambda m: None)
    pipe.run_all(["library", "bld", "score", "measure"])
    cfg = root.parent / f"{root.name}.json"
    cfg.write_text(json.dumps(config))
    return root, str(cfg)


def _sweep(capsys, root, cfg, *extra):
    capsys.readouterr()
    rc = main(["search", "--sweep", "--config", cfg, "--run-dir", str(root), "--no-progress", *extra])
    return rc, capsys.readouterr()


def test_parse_budgets_includes_stop():
    assert parse_budgets("0.4:0.9:0.02")[-1] == pytest.approx(0.9)
    assert len(parse_budgets("0.40:0.90:0.02")) == 26
    assert parse_budgets("0.5:0.5:0.1") == [0.5]


def test_sweep_writes_front_table_and_plot(scored_run, capsys):
    root, cfg = scored_run
    manifest = (root / "manifest.json").read_bytes() if (root / "manifest.json").exists() else None
    rc, out = _sweep(capsys, root, cfg, "--budgets", "0.3:1.0:0.05")
    assert rc == 0, out.err
    for f in ("sweep.json", "pareto.md", "pareto.png"):
        assert str(root / "search" / f) in out.out
    assert "budgets solved:" in out.out and "front:" in out.out
    data = json.loads((root / "search" / "sweep.json").read_text())
    pts = data["points"]
    assert pts and len(data["front"]) >= 1
    front = [pts[i] for i in data["front"]]
    # sorted by runtime (fastest first) and non-dominated: each slower point must score strictly better
    rts = [p["predicted_runtime_ms"] for p in front]
    assert rts == sorted(rts)
    for a, b in zip(front, front[1:], strict=False):
        assert b["objective"] < a["objective"]
    for p in pts:  # nothing off the front beats a front point on both axes
        for q in front:
            if p["on_front"]:
                continue
            assert not (
                p["predicted_runtime_ms"] <= q["predicted_runtime_ms"] and p["objective"] < q["objective"]
            )
    assert {i for i, p in enumerate(pts) if p["on_front"]} == set(data["front"])
    for p in pts:
        assert p["predicted_runtime_ms"] <= p["runtime_budget_ms"] + 1e-6
        assert p["runtime_budget_ms"] == pytest.approx(p["fraction"] * data["parent"]["measured_runtime_ms"])
        assert p["names"]
    png = (root / "search" / "pareto.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 1000
    md = (root / "search" / "pareto.md").read_text()
    assert "| fraction | predicted tokens/s | speed-up | objective | solve ms |" in md
    assert md.count("\n| 0.") + md.count("\n| 1.") == len(front)
    assert data["measured"] == []
    # a tool over finished stages: no stage marked, no stage file written
    if manifest is not None:
        assert (root / "manifest.json").read_bytes() == manifest
    assert not (root / "search" / "solutions.json").exists()


@pytest.mark.parametrize(
    "spec", ["0.9:0.4:0.02", "0:0.5:0.1", "0.4:0.9:0", "0.4:0.9", "a:b:c", "0.4:0.9:-0.1"]
)
def test_bad_budgets_exit_2(scored_run, capsys, spec):
    root, cfg = scored_run
    rc, out = _sweep(capsys, root, cfg, "--budgets", spec)
    assert rc == 2
    assert out.err.startswith("error: --budgets"), out.err


def test_sweep_before_score_and_measure(tmp_path, capsys, tiny_parent, tiny_run_config):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(tiny_run_config(tiny_parent)))
    rc, out = _sweep(capsys, tmp_path / "run", str(cfg))
    assert rc == 2
    assert "needs stage 'score'" in out.err and "puzzle score" in out.err, out.err
    assert not (tmp_path / "run" / "search" / "sweep.json").exists()


def test_measured_children_appear(scored_run, tmp_path, capsys, tiny_parent, tiny_run_config, austen_texts):
    src, cfg = scored_run
    root = tmp_path / "copy"
    shutil.copytree(src, root)
    pipe = Pipeline(
        load_config(tiny_run_config(tiny_parent)),
        root,
        texts=austen_texts,
        progress=False,
        log=lambda m: None,
    )
    pipe.run_stage("search")
    solutions = pipe.run.read_json("search/solutions.json")
    # evaluate's record of each child (its GKD is too long for this test): measured a little under its prediction
    evaluate = {"parent": {"measured_tokens_per_s": 100.0, "speedup": 1.0}}
    for name, rec in solutions.items():
        evaluate[name] = {"measured_tokens_per_s": 0.9 * rec["predicted"]["tokens_per_s"], "speedup": 1.2}
    pipe.run.write_json("evaluate/evaluate.json", evaluate)
    manifest = (root / "manifest.json").read_bytes()
    rc, out = _sweep(capsys, root, cfg)
    assert rc == 0, out.err
    data = json.loads((root / "search" / "sweep.json").read_text())
    measured = {m["name"]: m for m in data["measured"]}
    assert set(measured) == set(solutions)
    for name, m in measured.items():
        assert m["objective"] == pytest.approx(solutions[name]["objective"])
        assert m["measured_tokens_per_s"] == pytest.approx(0.9 * solutions[name]["predicted"]["tokens_per_s"])
    assert "## Measured children" in (root / "search" / "pareto.md").read_text()
    assert (root / "manifest.json").read_bytes() == manifest
    assert pipe.run.read_json("search/solutions.json") == solutions
