"""The paper's one-vs-rest protocol: for each class, train on its training images alone and score the test set.

Stages, each reading the previous one's files and skipped when its own output exists (so a rerun resumes):

    <out>/class-<c>/seed-<s>/detector.pt      geoad fit on class c with seed s
    <out>/class-<c>/seed-<s>/metrics.json     AUROC / AUPR-in / AUPR-out on the test split (c normal, rest anomalous)
    <out>/class-<c>/baselines.json            OC-SVM (label-free and hindsight) and IsolationForest, same split
    <out>/results.json, results.md            mean +- SEM over seeds, per class and over classes

Every seed and baseline of a class sees the same test images (a seeded subset when ``test_limit`` is set) and the
same normal training images.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effinfer_core.atomic import write_atomic
from geoad.baselines import isolation_forest, ocsvm_hindsight, ocsvm_label_free, raw_features
from geoad.data import GeoADDataModule, ImageData, load_dataset, resolve_class
from geoad.detector import FitConfig, GeoADDetector
from geoad.metrics import anomaly_metrics, auroc, mean_sem
from geoad.transforms import Preprocessing

BASELINES = ("ocsvm", "ocsvm-hindsight", "iforest")


@dataclass
class EvalConfig:
    dataset: str = "fashion-mnist"
    classes: list[int] | None = None  # None: every class
    seeds: int = 5
    out_dir: Path = Path("runs/geoad")
    fit: FitConfig = field(default_factory=FitConfig)
    train_limit: int | None = None  # normal training images per class (None: all, as the paper)
    test_limit: int | None = None  # test images (a seeded subset; None: the whole test split, as the paper)
    baselines: tuple[str, ...] = BASELINES
    baseline_max_train: int | None = 2000
    score_batch_size: int = 64
    data_dir: Path | None = None
    download: bool = False


def one_vs_rest(labels: torch.Tensor, normal_class: int) -> np.ndarray:
    """The protocol's ground truth: True where the test image belongs to the normal class."""
    return (labels == normal_class).numpy()


def load_test_split(config: EvalConfig) -> ImageData:
    test = load_dataset(config.dataset, "test", config.data_dir, config.download)
    if config.test_limit is not None and config.test_limit < len(test):
        # seed 0 whatever the run's seed: every run and baseline is measured on the same images
        test = test.subset(
            torch.randperm(len(test), generator=torch.Generator().manual_seed(0))[: config.test_limit]
        )
    return test


def _read_json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True))


def run_seed(config: EvalConfig, normal_class: int, seed: int, test: ImageData) -> dict[str, Any]:
    """Stage fit + score of one (class, seed); each part is skipped when its file exists."""
    folder = config.out_dir / f"class-{normal_class}" / f"seed-{seed}"
    if (done := _read_json(folder / "metrics.json")) is not None:
        return done
    artifact = folder / "detector.pt"
    if artifact.exists():
        detector = GeoADDetector.load(artifact)
    else:
        # checkpoints per run: an interrupted long run resumes from its last epoch
        checkpoints = folder / "checkpoints"
        fit = replace(
            config.fit, seed=seed, ckpt_dir=str(checkpoints), resume=(checkpoints / "last.ckpt").exists()
        )
        datamodule = GeoADDataModule(
            config.dataset,
            normal_class,
            batch_size=fit.batch_size,
            data_dir=config.data_dir,
            limit=config.train_limit,
            seed=0,
            download=config.download,
        )
        detector = GeoADDetector.fit(datamodule, fit)
        detector.save(artifact)
    is_normal = one_vs_rest(test.labels, normal_class)
    scores = detector.score(test.images, config.score_batch_size)
    metrics = anomaly_metrics(scores.normality.numpy(), is_normal)
    metrics["auroc_simplified"] = auroc(scores.simplified.numpy(), is_normal)
    metrics.update({k: detector.meta.get(k) for k in ("train_pairs", "train_seconds", "train_pairs_per_s")})
    _write_json(folder / "metrics.json", metrics)
    return metrics


def run_baselines(config: EvalConfig, normal_class: int, test: ImageData) -> dict[str, Any]:
    path = config.out_dir / f"class-{normal_class}" / "baselines.json"
    done = _read_json(path) or {}
    todo = [b for b in config.baselines if b not in done]
    if not todo:
        return done
    normal = GeoADDataModule(
        config.dataset,
        normal_class,
        data_dir=config.data_dir,
        limit=config.train_limit,
        seed=0,
        download=config.download,
    )
    normal.setup()
    preprocessing = Preprocessing.for_images(normal.normal.images, config.fit.pad)  # the detector's own
    train = raw_features(normal.normal.images, preprocessing)
    test_x = raw_features(preprocessing.conform(test.images), preprocessing)
    is_normal = one_vs_rest(test.labels, normal_class)
    for name in todo:
        if name == "ocsvm":
            result = ocsvm_label_free(train, test_x, max_train=config.baseline_max_train)
        elif name == "ocsvm-hindsight":
            result = ocsvm_hindsight(train, test_x, is_normal, max_train=config.baseline_max_train)
        elif name == "iforest":
            result = isolation_forest(train, test_x)
        else:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        done[name] = {**anomaly_metrics(result.normality, is_normal), "params": result.params}
        _write_json(path, done)  # after each baseline: an interrupted run keeps what it finished
    return done


def evaluate(config: EvalConfig, log=print) -> dict[str, Any]:
    """Run the whole protocol and write results.json and results.md under ``config.out_dir``."""
    test = load_test_split(config)
    classes = config.classes if config.classes is not None else list(range(len(test.classes)))
    for c in classes:
        resolve_class(test, c)  # a class that does not exist fails before any training
    per_class = {}
    for c in classes:
        runs = []
        for seed in range(config.seeds):
            runs.append(run_seed(config, c, seed, test))
            log(f"class {c} ({test.classes[c]}) seed {seed}: AUROC {100 * runs[-1]['auroc']:.2f}")
        baselines = run_baselines(config, c, test) if config.baselines else {}
        per_class[c] = {"name": test.classes[c], "runs": runs, "baselines": baselines}
    summary = summarise(per_class)
    summary["config"] = json.loads(json.dumps(asdict(config), default=str))
    summary["n_test"] = len(test)
    _write_json(config.out_dir / "results.json", summary)
    write_atomic(config.out_dir / "results.md", markdown_table(summary))
    return summary


def summarise(per_class: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """Mean +- SEM over the seeds of each class, and the mean over classes of those means."""
    rows = {}
    for c, result in per_class.items():
        row = {"name": result["name"], "seeds": len(result["runs"])}
        for key in ("auroc", "aupr_in", "aupr_out", "auroc_simplified"):
            row[key] = mean_sem([run[key] for run in result["runs"]])
        for name, metrics in result["baselines"].items():
            row[name] = (metrics["auroc"], 0.0)  # deterministic given the split: no seeds
        rows[str(c)] = row
    keys = [k for k in next(iter(rows.values())) if k not in ("name", "seeds")]
    mean = {
        k: mean_sem([row[k][0] for row in rows.values()]) for k in keys if all(k in r for r in rows.values())
    }
    return {"per_class": rows, "mean_over_classes": mean, "runs": {str(c): r for c, r in per_class.items()}}


COLUMNS = {
    "auroc": "GEOM AUROC",
    "aupr_in": "AUPR-in",
    "aupr_out": "AUPR-out",
    "auroc_simplified": "simplified AUROC",
    "ocsvm": "RAW-OC-SVM (label-free)",
    "ocsvm-hindsight": "RAW-OC-SVM (hindsight, test-tuned)",
    "iforest": "IsolationForest",
}


def markdown_table(summary: dict[str, Any]) -> str:
    """Per-class table in percent, mean +- SEM over seeds; the last row is the mean (+- SEM) over classes."""
    rows = summary["per_class"]
    keys = [k for k in COLUMNS if k in summary["mean_over_classes"]]

    def cell(value: tuple[float, float]) -> str:
        mean, sem = value
        return f"{100 * mean:.1f} ± {100 * sem:.1f}" if sem else f"{100 * mean:.1f}"

    lines = [
        "| class | seeds | " + " | ".join(COLUMNS[k] for k in keys) + " |",
        "|---|---|" + "---|" * len(keys),
    ]
    for c, row in rows.items():
        lines.append(
            f"| {c} {row['name']} | {row['seeds']} | " + " | ".join(cell(row[k]) for k in keys) + " |"
        )
    mean = summary["mean_over_classes"]
    lines.append(f"| **mean over {len(rows)} classes** | | " + " | ".join(cell(mean[k]) for k in keys) + " |")
    return "\n".join(lines) + "\n"
