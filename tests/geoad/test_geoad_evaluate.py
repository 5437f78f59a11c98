import json

import torch

from geoad.cli import main
from geoad.data import load_dataset
from geoad.evaluate import EvalConfig, load_test_split


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
    summary = json.loads((out / "results.json").read_text())
    assert set(summary["per_class"]) == {"1"} and summary["n_test"] == 80
    row = summary["per_class"]["1"]
    assert row["seeds"] == 2 and 0 <= row["auroc"][0] <= 1 and row["auroc"][1] >= 0
    runs = [json.loads((out / "class-1" / f"seed-{s}" / "metrics.json").read_text())["auroc"] for s in (0, 1)]
    assert row["auroc"][0] == sum(runs) / 2
    assert {"ocsvm", "ocsvm-hindsight", "iforest"} <= set(row)
    # the test-tuned OC-SVM can only be at least as good as the label-free one on the test set
    assert row["ocsvm-hindsight"][0] >= row["ocsvm"][0]
    table = (out / "results.md").read_text()
    assert "| 1 bag | 2 |" in table and "hindsight" in table and "mean over 1 classes" in table
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("detector.pt")}
    assert len(stamps) == 2
    capsys.readouterr()
    assert main(args) == 0  # every stage is done: nothing is retrained
    assert {p: p.stat().st_mtime_ns for p in out.rglob("detector.pt")} == stamps


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
