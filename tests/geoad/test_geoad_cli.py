import csv
import shutil

import pytest
import torch

from benchmarks.data import foolbox_samples
from geoad.cli import build_parser, main
from geoad.detector import GeoADDetector


@pytest.fixture(scope="module")
def artifact(tiny_detector, tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "det.pt"
    tiny_detector.save(path)
    return path


@pytest.fixture
def image_folder(tmp_path):
    """Real PNGs: five Fashion-MNIST (28x28 grey), two CIFAR-10 (32x32 RGB), one corrupt file."""
    folder = tmp_path / "images"
    folder.mkdir()
    for s in foolbox_samples(dataset="fashionMNIST")[:5] + foolbox_samples(dataset="cifar10")[:2]:
        shutil.copy(s.path, folder / s.path.name)
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    return folder


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_every_subcommand_explains_itself(capsys):
    for command in ("fit", "score", "evaluate", "bench"):
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args([command, "--help"])
        assert exit_info.value.code == 0
        assert "--" in capsys.readouterr().out


def test_score_folder_skips_corrupt_and_converts(artifact, image_folder, tmp_path, capsys):
    out = tmp_path / "scores.csv"
    assert main(["score", str(artifact), str(image_folder), "--out", str(out)]) == 0
    rows = read_csv(out)
    assert len(rows) == 7 and "corrupt.png" not in {r["path"] for r in rows}
    assert all(
        float(r["anomaly_score"]) == pytest.approx(-float(r["normality_score"]), rel=1e-5) for r in rows
    )
    err = capsys.readouterr().err
    assert (
        "skipped 1 unreadable file" in err and "converted RGB -> L" in err and "resized 32x32 -> 28x28" in err
    )


def test_score_tensor_file(artifact, fmnist_test, tmp_path):
    images, _ = fmnist_test
    torch.save(images[:6], tmp_path / "x.pt")  # uint8 [N, H, W]
    torch.save(images[:6, None].float() / 255, tmp_path / "y.pt")  # float [N, 1, H, W] in [0, 1]
    assert main(["score", str(artifact), str(tmp_path / "x.pt"), "--out", str(tmp_path / "x.csv")]) == 0
    assert main(["score", str(artifact), str(tmp_path / "y.pt"), "--out", str(tmp_path / "y.csv")]) == 0
    x, y = read_csv(tmp_path / "x.csv"), read_csv(tmp_path / "y.csv")
    assert [r["index"] for r in x] == [str(i) for i in range(6)]
    assert [r["anomaly_score"] for r in x] == [r["anomaly_score"] for r in y]


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing-artifact", "no detector file"),
        ("empty-folder", "contains no image files"),
        ("all-corrupt", "none of the 1 image files could be read"),
        ("two-channels", "has 2 channels"),
    ],
)
def test_score_bad_input_fails_cleanly(case, message, artifact, tmp_path, capsys):
    art, inp = str(artifact), tmp_path / "input"
    inp.mkdir()
    if case == "missing-artifact":
        art = str(tmp_path / "nope.pt")
    elif case == "all-corrupt":
        (inp / "a.png").write_bytes(b"not an image")
    elif case == "two-channels":
        inp = tmp_path / "x.pt"
        torch.save(torch.zeros(3, 2, 28, 28, dtype=torch.uint8), inp)
    out = tmp_path / "scores.csv"
    assert main(["score", art, str(inp), "--out", str(out)]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last
    assert not out.exists()


def test_fit_cli_writes_one_artifact_and_refuses_bad_classes(fmnist_test, tmp_path, capsys):
    out = tmp_path / "det.pt"
    common = [
        "--backbone",
        "wrn-10-1",
        "--transforms",
        "4",
        "--max-steps",
        "3",
        "--batch-size",
        "32",
        "--train-limit",
        "64",
        "--dirichlet-limit",
        "32",
        "--accelerator",
        "cpu",
        "--devices",
        "1",
    ]
    assert main(["fit", "--normal-class", "12", "--out", str(out), *common]) == 2
    assert "class 12 does not exist" in capsys.readouterr().err and not out.exists()
    images, _ = fmnist_test
    torch.save(images[:64], tmp_path / "normal.pt")
    assert (
        main(
            [
                "fit",
                "--images",
                str(tmp_path / "normal.pt"),
                "--out",
                str(out),
                *common,
                "--ckpt-dir",
                str(tmp_path / "ckpt"),
            ]
        )
        == 0
    )
    assert out.exists() and (tmp_path / "ckpt" / "last.ckpt").exists()
    resumed = tmp_path / "resumed.pt"  # continue the same run from its checkpoint up to 6 steps in all
    assert (
        main(
            [
                "fit",
                "--images",
                str(tmp_path / "normal.pt"),
                "--out",
                str(resumed),
                *common,
                "--max-steps",
                "6",
                "--ckpt-dir",
                str(tmp_path / "ckpt"),
                "--resume",
            ]
        )
        == 0
    )
    meta = GeoADDetector.load(resumed).meta
    assert meta["start_step"] == 3 and meta["train_steps"] == 6
    assert main(["fit", "--images", str(tmp_path / "normal.pt"), "--out", str(out), *common]) == 0
    assert "nothing to do" in capsys.readouterr().err  # a rerun skips a finished stage
    assert main(["fit", "--normal-class", "0", "--out", str(tmp_path / "b.pt"), "--resume", *common]) == 2
    assert "no checkpoint" in capsys.readouterr().err
    assert main(["fit", "--normal-class", "0", "--transforms", "zoom", "--out", str(tmp_path / "c.pt")]) == 2


def test_cli_and_api_default_to_the_same_precision():
    from geoad.cli import _fit_config
    from geoad.detector import FitConfig

    for command in (["fit", "--out", "x.pt"], ["evaluate"]):
        config = _fit_config(build_parser().parse_args(command), 0)
        assert config.precision == FitConfig().precision == "auto"
        assert config.resolved_precision() == FitConfig().resolved_precision()


def test_bench_rejects_an_unknown_task_and_runs_nothing(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    assert main(["bench", "--only", "geoad.typo", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "geoad.typo" in err and all(
        name in err for name in ("geoad.fmnist", "geoad.baselines", "geoad.scoring")
    )
    assert not results.exists() and not (tmp_path / "work").exists()
