"""The paper's one-vs-rest protocol: for each class, train on its training images alone and score the test set.

The out-dir is an ``effinfer_core`` run folder bound to one data set; every step is keyed by the hash of its inputs,
so a rerun recomputes exactly the steps whose inputs changed (and an unchanged rerun does no work):

    <out>/manifest.json                            the data set (and its fingerprint) and each finished step's inputs
    <out>/class-<c>/seed-<s>/fit/detector.pt       geoad fit on class c with seed s; inputs: data set, class, seed,
                                                   train_limit and the FitConfig fields that change the weights
    <out>/class-<c>/seed-<s>/checkpoints/<hash>/   Lightning checkpoints of a fit in progress, per fit inputs hash
    <out>/class-<c>/seed-<s>/score/metrics.json    AUROC / AUPR-in / AUPR-out on the test split (c normal, rest
                                                   anomalous); inputs: the fit's hash and test_limit
    <out>/class-<c>/baselines/<name>/metrics.json  OC-SVM (label-free and hindsight) and IsolationForest, same split
    <out>/results.json, results.md                 mean +- SEM over seeds, per class and over classes

Every seed and baseline of a class sees the same test images (a seeded subset when ``test_limit`` is set) and the
same normal training images.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from effinfer_core.atomic import write_atomic
from effinfer_core.progress import Log, Progress, stderr_log
from effinfer_core.run_folder import RunFolder, inputs_hash
from geoad.baselines import isolation_forest, ocsvm_hindsight, ocsvm_label_free, raw_features
from geoad.data import NAMED, GeoADDataModule, ImageData, load_dataset, resolve_class
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


def dataset_fingerprint(dataset: str) -> str:
    """What identifies the data: a named set's name; a file's sha256; a folder's file listing with sizes (reading
    every image to hash it would cost as much as loading the set)."""
    if dataset in NAMED:
        return dataset
    path = Path(dataset)
    if path.is_file():
        return "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    if path.is_dir():
        listing = sorted((str(p.relative_to(path)), p.stat().st_size) for p in path.rglob("*") if p.is_file())
        return "listing:" + inputs_hash(listing)
    return dataset  # load_dataset reports what is wrong with it


def _metrics_text(metrics: dict[str, Any]) -> str:
    return f"AUROC {100 * metrics['auroc']:.2f}"


class EvalRun:
    """The protocol's steps on one run folder: ``seed(c, s)`` fits and scores, ``baseline(c, name)``; each step
    is computed only when its inputs hash is not the one recorded as done, and returns (metrics, computed)."""

    def __init__(self, config: EvalConfig, fit_log: Log | None = None, test: ImageData | None = None) -> None:
        self.config = config
        self.fit_log = fit_log  # None: a progress bar on a terminal, a few stderr lines elsewhere
        self.run = RunFolder(config.out_dir)
        self.fingerprint = dataset_fingerprint(config.dataset)
        self.run.bind("dataset", config.dataset, self.fingerprint)
        self.test = test if test is not None else load_test_split(config)
        self._baseline_features: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    # ---- keys -----------------------------------------------------------------------------------------------
    def fit_inputs(self, normal_class: int, seed: int) -> dict[str, Any]:
        fit = replace(self.config.fit, seed=seed)
        return {
            "dataset": self.fingerprint,
            "class": normal_class,
            "seed": seed,
            "train_limit": self.config.train_limit,
            "fit": fit.weights_inputs(),
        }

    def score_inputs(self, normal_class: int, seed: int) -> dict[str, Any]:
        return {"fit": inputs_hash(self.fit_inputs(normal_class, seed)), "test_limit": self.config.test_limit}

    def baseline_inputs(self, normal_class: int, name: str) -> dict[str, Any]:
        c = self.config
        return {
            "dataset": self.fingerprint,
            "class": normal_class,
            "baseline": name,
            "train_limit": c.train_limit,
            "test_limit": c.test_limit,
            "baseline_max_train": c.baseline_max_train,
            "pad": c.fit.pad,
        }

    # ---- steps ----------------------------------------------------------------------------------------------
    def detector_path(self, normal_class: int, seed: int) -> Path:
        return self.run.path(f"class-{normal_class}/seed-{seed}/fit/detector.pt")

    def fit(self, normal_class: int, seed: int) -> bool:
        """Train (class, seed) unless a detector of the same inputs is there; whether it trained."""
        step = f"class-{normal_class}/seed-{seed}/fit"
        inputs = self.fit_inputs(normal_class, seed)
        key = inputs_hash(inputs)
        if self.run.is_done(step, key):
            return False
        # checkpoints per fit inputs: an interrupted fit resumes, and only with the settings it was started with
        checkpoints = self.run.path(f"class-{normal_class}/seed-{seed}/checkpoints/{key}")
        fit = replace(
            self.config.fit, seed=seed, ckpt_dir=str(checkpoints), resume=(checkpoints / "last.ckpt").exists()
        )
        datamodule = GeoADDataModule(
            self.config.dataset,
            normal_class,
            batch_size=fit.batch_size,
            data_dir=self.config.data_dir,
            limit=self.config.train_limit,
            seed=0,
            download=self.config.download,
        )
        prefix = f"fit T={fit.transforms} class {normal_class} seed {seed}"
        detector = GeoADDetector.fit(datamodule, fit, self.fit_log, prefix)
        artifact = self.detector_path(normal_class, seed)
        detector.save(artifact)
        self.run.mark_done(step, inputs, artifacts=[artifact])
        shutil.rmtree(checkpoints, ignore_errors=True)  # the finished detector replaces them
        return True

    def seed(self, normal_class: int, seed: int) -> tuple[dict[str, Any], bool]:
        """Fit (if needed) and score one (class, seed): its metrics, and whether anything was computed."""
        trained = self.fit(normal_class, seed)
        step = f"class-{normal_class}/seed-{seed}/score"
        inputs = self.score_inputs(normal_class, seed)
        if self.run.is_done(step, inputs_hash(inputs)):
            return self.run.read_json(f"{step}/metrics.json"), trained
        detector = GeoADDetector.load(self.detector_path(normal_class, seed))
        is_normal = one_vs_rest(self.test.labels, normal_class)
        scores = detector.score(self.test.images, self.config.score_batch_size)
        metrics: dict[str, Any] = {**anomaly_metrics(scores.normality.numpy(), is_normal)}
        metrics["auroc_simplified"] = auroc(scores.simplified.numpy(), is_normal)
        metrics.update(
            {k: detector.meta.get(k) for k in ("train_pairs", "train_seconds", "train_pairs_per_s")}
        )
        path = self.run.write_json(f"{step}/metrics.json", metrics)
        self.run.mark_done(step, inputs, artifacts=[path])
        return metrics, True

    def _features(self, normal_class: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw-pixel features of the normal training images and of the test split, as the detector sees them."""
        if normal_class not in self._baseline_features:
            c = self.config
            normal = GeoADDataModule(
                c.dataset, normal_class, data_dir=c.data_dir, limit=c.train_limit, seed=0, download=c.download
            )
            images = normal.normal_data().images
            preprocessing = Preprocessing.for_images(images, c.fit.pad)  # the detector's own
            train = raw_features(images, preprocessing)
            test_x = raw_features(preprocessing.conform(self.test.images), preprocessing)
            self._baseline_features[normal_class] = (train, test_x)
        return self._baseline_features[normal_class]

    def baseline(self, normal_class: int, name: str) -> tuple[dict[str, Any], bool]:
        """One baseline on one class: its metrics (with the parameters it chose) and whether it was computed."""
        if name not in BASELINES:
            raise ValueError(f"unknown baseline {name!r}; choose from {', '.join(BASELINES)}")
        step = f"class-{normal_class}/baselines/{name}"
        inputs = self.baseline_inputs(normal_class, name)
        if self.run.is_done(step, inputs_hash(inputs)):
            return self.run.read_json(f"{step}/metrics.json"), False
        train, test_x = self._features(normal_class)
        is_normal = one_vs_rest(self.test.labels, normal_class)
        max_train = self.config.baseline_max_train
        if name == "ocsvm":
            result = ocsvm_label_free(train, test_x, max_train=max_train)
        elif name == "ocsvm-hindsight":
            result = ocsvm_hindsight(train, test_x, is_normal, max_train=max_train)
        else:
            result = isolation_forest(train, test_x)
        metrics = {**anomaly_metrics(result.normality, is_normal), "params": result.params}
        path = self.run.write_json(f"{step}/metrics.json", metrics)
        self.run.mark_done(step, inputs, artifacts=[path])
        return metrics, True


def evaluate(config: EvalConfig, log: Log = stderr_log, fit_log: Log | None = None) -> dict[str, Any]:
    """Run the whole protocol and write results.json and results.md under ``config.out_dir``; ``log`` gets one
    line per (class, seed) and per baseline, ``fit_log`` each fit's progress lines (None: a bar on a terminal)."""
    test = load_test_split(config)
    classes = config.classes if config.classes is not None else list(range(len(test.classes)))
    for c in classes:
        resolve_class(test, c)  # a class that does not exist fails before any training (or any folder)
    ev = EvalRun(config, fit_log, test)
    names = test.classes
    progress = Progress(len(classes) * (config.seeds + len(config.baselines)), "geoad evaluate", log)
    per_class = {}
    for c in classes:
        runs = []
        for seed in range(config.seeds):
            metrics, computed = ev.seed(c, seed)
            runs.append(metrics)
            done = "" if computed else " (done before)"
            progress.done(
                f"class {c} ({names[c]}) seed {seed}: {_metrics_text(metrics)}{done}", skipped=not computed
            )
        baselines = {}
        for name in config.baselines:
            baselines[name], computed = ev.baseline(c, name)
            done = "" if computed else " (done before)"
            progress.done(
                f"class {c} ({names[c]}) {name}: {_metrics_text(baselines[name])}{done}", skipped=not computed
            )
        per_class[c] = {"name": names[c], "runs": runs, "baselines": baselines}
    summary = summarise(per_class)
    summary["config"] = json.loads(json.dumps(asdict(config), default=str))
    summary["n_test"] = len(ev.test)
    write_atomic(config.out_dir / "results.json", json.dumps(summary, indent=1, sort_keys=True))
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
