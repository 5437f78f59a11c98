import json
from pathlib import Path

import pytest
import torch

from geoad.cli import main
from geoad.data import load_dataset
from geoad.detector import GeoADDetector
from geoad.evaluate import EvalConfig, load_test_split
from geoad.metrics import auroc


def small_dataset(path, fmnist_test):
    """Two real Fashion-MNIST classes (trouser, bag) as a labelled tensor file: 120 train / 40 test each."""
    images, labels = fmnist_test
    keep = [torch.nonzero(labels == c).flatten() for c in (1, 8)]
    train = torch.cat([k[:120] for k in keep])
    test = torch.cat([k[120:160] for k in keep])
    relabel = (labels == 8).long()
    torch.save(
        {
            "train_images": images[train],
            "train_labels": relabel[train],
            "test_images": images[test],
            "test_labels": relabel[test],
            "classes": ["trouser", "bag"],
        },
        path,
    )


def test_protocol_end_to_end_then_rerun_skips(fmnist_test, tmp_path, capsys):
    data = tmp_path / "two.pt"
    small_dataset(data, fmnist_test)
    out = tmp_path / "runs"
    args = [
        "evaluate",
        "--dataset",
        str(data),
        "--classes",
        "bag",
        "--seeds",
        "2",
        "--out-dir",
        str(out),
        "--backbone",
        "wrn-10-1",
        "--transforms",
        "4",
        "--max-steps",
        "4",
        "--batch-size",
        "32",
        "--baseline-max-train",
        "60",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32-true",
    ]
    assert main(args) == 0
    err = capsys.readouterr().err
    # one line per (class, seed) and per baseline with time and estimate; a few per fit; Lightning's chatter in a file
    assert "geoad evaluate 1/5 (20%) class 1 (bag) seed 0: AUROC" in err and "left" in err
    assert "geoad evaluate 5/5 (100%) class 1 (bag) iforest" in err
    assert "fit T=4 class 1 seed 1 step 4/4 (100%)" in err and len(err.splitlines()) <= 20
    assert "GPU available" not in err and "GPU available" in (out / "geoad.log").read_text()
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["per_class"]) == {"1"} and summary["n_test"] == 80
    row = summary["per_class"]["1"]
    assert row["seeds"] == 2 and 0 <= row["auroc"][0] <= 1 and row["auroc"][1] >= 0
    runs = [
        json.loads((out / "class-1" / f"seed-{s}" / "score" / "metrics.json").read_text())["auroc"]
        for s in (0, 1)
    ]
    assert row["auroc"][0] == sum(runs) / 2
    assert {"ocsvm", "ocsvm-hindsight", "iforest"} <= set(row)
    # the test-tuned OC-SVM can only be at least as good as the label-free one on the test set
    assert row["ocsvm-hindsight"][0] >= row["ocsvm"][0]
    table = (out / "results.md").read_text()
    assert "| 1 bag | 2 |" in table and "hindsight" in table and "mean over 1 classes" in table
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("detector.pt")}
    assert len(stamps) == 2
    assert main(args) == 0  # every stage is done: nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.rglob("detector.pt")} == stamps
    assert capsys.readouterr().err.count("(done before)") == 5


def test_bad_class_fails_before_training(fmnist_test, tmp_path, capsys):
    data = tmp_path / "two.pt"
    small_dataset(data, fmnist_test)
    assert (
        main(["evaluate", "--dataset", str(data), "--classes", "0,5", "--out-dir", str(tmp_path / "r")]) == 2
    )
    assert "class 5 does not exist" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_test_subset_is_shared_and_seeded(fmnist_test):
    config = EvalConfig(test_limit=300)
    a, b = load_test_split(config), load_test_split(config)
    assert len(a) == 300 and torch.equal(a.images, b.images)
    assert len(load_dataset("fashion-mnist", "test").labels.unique()) == len(a.labels.unique()) == 10


def evaluate_args(data, out, *extra):
    """`geoad evaluate` on the small two-class set: one class, one seed, a few steps of a tiny network."""
    return [
        "evaluate",
        "--dataset",
        str(data),
        "--classes",
        "bag",
        "--seeds",
        "1",
        "--out-dir",
        str(out),
        "--backbone",
        "wrn-10-1",
        "--max-steps",
        "4",
        "--batch-size",
        "32",
        "--baselines",
        "iforest",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
        "--precision",
        "32-true",
        *extra,
    ]


class Calls:
    """Counts GeoADDetector.fit / .score calls (the real ones still run)."""

    def __init__(self, monkeypatch):
        self.fit = self.score = 0
        real_fit, real_score = GeoADDetector.fit.__func__, GeoADDetector.score

        def fit(cls, *args, **kwargs):
            self.fit += 1
            return real_fit(cls, *args, **kwargs)

        def score(detector, *args, **kwargs):
            self.score += 1
            return real_score(detector, *args, **kwargs)

        monkeypatch.setattr(GeoADDetector, "fit", classmethod(fit))
        monkeypatch.setattr(GeoADDetector, "score", score)


def test_changed_transforms_are_retrained_not_reported_from_the_old_run(fmnist_test, tmp_path):
    # the defect: results keyed by folder name alone, so a 72 run in a 4 run's folder reported the 4-set's AUROC
    data, out = tmp_path / "two.pt", tmp_path / "runs"
    small_dataset(data, fmnist_test)
    assert main(evaluate_args(data, out, "--transforms", "4")) == 0
    assert main(evaluate_args(data, out, "--transforms", "72")) == 0
    summary = json.loads((out / "results.json").read_text())
    assert summary["config"]["fit"]["transforms"] == "72"
    detectors = [GeoADDetector.load(p) for p in out.rglob("detector.pt")]
    t72 = [d for d in detectors if len(d.transforms) == 72]
    assert len(t72) == 1, f"transformation counts on disk: {[len(d.transforms) for d in detectors]}"
    test = load_test_split(EvalConfig(dataset=str(data)))
    expected = auroc(t72[0].score(test.images, 16).normality.numpy(), (test.labels == 1).numpy())
    assert summary["per_class"]["1"]["auroc"][0] == pytest.approx(expected, abs=1e-6)


def test_unchanged_rerun_does_no_work_and_test_limit_only_rescores(
    fmnist_test, tmp_path, monkeypatch, capsys
):
    data, out = tmp_path / "two.pt", tmp_path / "runs"
    small_dataset(data, fmnist_test)
    calls = Calls(monkeypatch)
    assert main(evaluate_args(data, out, "--transforms", "4")) == 0
    assert (calls.fit, calls.score) == (1, 1)
    first = json.loads((out / "results.json").read_text())
    assert main(evaluate_args(data, out, "--transforms", "4")) == 0  # unchanged: nothing trained or scored
    assert (calls.fit, calls.score) == (1, 1)
    assert json.loads((out / "results.json").read_text())["per_class"] == first["per_class"]
    assert main(evaluate_args(data, out, "--transforms", "4", "--test-limit", "50")) == 0
    assert (calls.fit, calls.score) == (1, 2)  # rescored on the new subset, not retrained
    summary = json.loads((out / "results.json").read_text())
    assert summary["n_test"] == 50 and summary["config"]["test_limit"] == 50


def test_interrupted_fit_resumes_only_its_own_settings(fmnist_test, tmp_path, monkeypatch):
    data, out = tmp_path / "two.pt", tmp_path / "runs"
    small_dataset(data, fmnist_test)
    seen = []
    real_fit = GeoADDetector.fit.__func__

    def fit(cls, datamodule, config, *args, **kwargs):
        seen.append((config.ckpt_dir, config.resume))
        if len(seen) == 1:
            real_fit(cls, datamodule, config, *args, **kwargs)  # leaves last.ckpt ...
            raise KeyboardInterrupt  # ... and is "killed" before the detector is saved
        return real_fit(cls, datamodule, config, *args, **kwargs)

    monkeypatch.setattr(GeoADDetector, "fit", classmethod(fit))
    with pytest.raises(KeyboardInterrupt):
        main(evaluate_args(data, out, "--transforms", "4"))
    assert main(evaluate_args(data, out, "--transforms", "8")) == 0  # other settings: a fresh fit
    assert main(evaluate_args(data, out, "--transforms", "4")) == 0  # its own settings: resumed
    (dir4, resume4), (dir8, resume8), (dir4_again, resume4_again) = seen
    assert dir4 != dir8 and dir4 == dir4_again
    assert (resume4, resume8, resume4_again) == (False, False, True)
    assert not Path(dir4).exists()  # a finished fit's checkpoints are removed


def test_a_run_folder_refuses_another_data_set(fmnist_test, tmp_path, capsys):
    data, out = tmp_path / "two.pt", tmp_path / "runs"
    small_dataset(data, fmnist_test)
    assert main(evaluate_args(data, out, "--transforms", "4", "--baselines", "none")) == 0
    images = torch.load(data)
    images["test_images"] = images["test_images"].flip(-1)  # same name, other data
    torch.save(images, data)
    capsys.readouterr()
    assert main(evaluate_args(data, out, "--transforms", "4", "--baselines", "none")) == 2
    assert "use another folder" in capsys.readouterr().err
