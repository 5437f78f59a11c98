from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import quadformer.bench as bench
from benchmarks.bench_command import add_bench_arguments, run_bench

from .conftest import tiny_config


def test_bench_task_records_accuracy_and_cost(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real task on the tiny profile: vanilla and pixel-blur at 4 and 16 tokens, each trained, evaluated and
    measured, and ToMe on the 16-token vanilla ViT matched to the 4-token one's FLOPs."""

    def tiny_profile(profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
        return tiny_config(data_dir, **overrides["quadtree"])

    monkeypatch.setattr(bench, "load_profile", tiny_profile)
    monkeypatch.setattr(
        bench, "sweep_for", lambda profile: bench.Sweep((4, 16), ("none", "pixel-blur"), None)
    )
    parser = argparse.ArgumentParser()
    add_bench_arguments(parser)
    args = parser.parse_args(
        ["--results", str(tmp_path / "results.jsonl"), "--work-root", str(tmp_path / "work")]
    )
    assert run_bench(args, bench.tasks()) == 0
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    records = [r for r in map(json.loads, lines) if r["task"] == "quadformer.clutter"]
    variants = [r["variant"] for r in records]
    assert variants[:4] == [
        "vanilla ViT N=4",
        "Quadformer pixel-blur N=4",
        "vanilla ViT N=16",
        "Quadformer pixel-blur N=16",
    ]
    assert len(variants) == 5 and variants[4].startswith("ToMe r=") and variants[4].endswith("(FLOPs of N=4)")
    vanilla, quad = (r["cost"] for r in records[2:4])
    tome = records[4]
    assert (
        tome["extra"]["tome_r"] > 0
        and records[0]["cost"]["flops_per_sample"] < tome["cost"]["flops_per_sample"]
    )
    assert (
        tome["cost"]["flops_per_sample"] < vanilla["flops_per_sample"]
    )  # merging cut the 16-token ViT's cost
    assert all(0 <= r["quality"]["accuracy"] <= 1 for r in records)
    assert vanilla["samples_per_s"] > 0 and vanilla["tokens_per_s"] == 16 * vanilla["samples_per_s"]
    # same ViT, same tokens: Quadformer costs the ViT's FLOPs plus its scorer's (pixel-blur: no multiply-adds)
    assert quad["flops_per_sample"] == pytest.approx(vanilla["flops_per_sample"], rel=0.01)
    work = next((tmp_path / "work").rglob("pixel-blur-N16"))
    mtime = (work / "model.pt").stat().st_mtime
    assert run_bench(args, bench.tasks()) == 0  # an unchanged rerun reuses the trained variants
    assert (work / "model.pt").stat().st_mtime == mtime
    manifest = json.loads((work / "manifest.json").read_text())
    manifest["variant"]["fingerprint"] = (
        "other"  # a folder left by other settings (or an older default) is redone
    )
    (work / "manifest.json").write_text(json.dumps(manifest))
    assert run_bench(args, bench.tasks()) == 0
    assert (work / "model.pt").stat().st_mtime != mtime


def test_the_claim_needs_a_gain_at_every_budget() -> None:
    def rec(variant: str, tokens: int, acc: float) -> dict[str, Any]:
        return {
            "variant": variant,
            "quality": {"accuracy": acc},
            "cost": {"samples_per_s": 100.0 / tokens},
            "extra": {"tokens": tokens},
        }

    run = [
        rec("vanilla ViT N=16", 16, 0.30),
        rec("Quadformer pixel-blur N=16", 16, 0.40),
        rec("Quadformer oracle N=16", 16, 0.90),  # the oracle needs masks: it does not count
        rec("vanilla ViT N=64", 64, 0.50),
        rec("Quadformer feature N=64", 64, 0.55),
    ]
    v = bench.judge_clutter(run)
    assert v.verdict == "holds" and (v.method, v.baseline) == (
        "Quadformer pixel-blur N=16",
        "vanilla ViT N=16",
    )
    assert "N=16 +10.0 pt, N=64 +5.0 pt" in v.note
    run[-1] = rec("Quadformer feature N=64", 64, 0.45)
    assert bench.judge_clutter(run).verdict == "does not hold"
    run[-1] = rec("Quadformer feature N=64", 64, 0.505)  # half a point: within one seed's noise
    assert bench.judge_clutter(run).verdict == "does not hold"
    at_chance = [rec("vanilla ViT N=16", 16, 0.086), rec("Quadformer pixel-blur N=16", 16, 0.088)]
    assert (
        bench.judge_clutter(at_chance).verdict == "not run at this profile"
    )  # the quick budget trains nothing
