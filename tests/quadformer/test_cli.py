from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

from quadformer.cli import main

from .conftest import TINY, tiny_config

COMMANDS = ("data", "train", "evaluate", "predict", "tokenize", "bench")


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0 and "usage: quadformer " + command in capsys.readouterr().out


def test_console_script_installed() -> None:
    result = subprocess.run(
        [str(Path(sys.executable).with_name("quadformer")), "--help"], capture_output=True, text=True
    )
    assert result.returncode == 0 and "tokenize" in result.stdout


def _config_file(tmp_path: Path, data_dir: Path, **quadtree: Any) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(tiny_config(data_dir, **quadtree)))
    return path


def test_data_train_evaluate(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = _config_file(tmp_path, data_dir)
    assert main(["data", "--profile", str(config)]) == 0
    assert Path(capsys.readouterr().out.strip()).name.startswith(f"s{TINY.size}-n{TINY.train}")
    out = tmp_path / "run"
    assert (
        main(["train", "--profile", str(config), "--scorer", "random", "--steps", "3", "--out", str(out)])
        == 0
    )
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["scorer"] == "random" and metrics["steps"] == 3 and (out / "model.pt").is_file()
    assert (out / "train.log").is_file()  # Lightning's banners went there, not to the screen
    assert main(["evaluate", str(out / "model.pt"), "--profile", str(config)]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == metrics["accuracy"]


def test_train_refuses_bad_budget_before_writing(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config_file(tmp_path, data_dir)
    out = tmp_path / "never"
    assert main(["train", "--profile", str(config), "--tokens", "17", "--out", str(out)]) == 2
    assert "nearest valid budget: 16 or 19" in capsys.readouterr().err and not out.exists()
    assert (
        main(["train", "--profile", str(config), "--scorer", "none", "--tokens", "19", "--out", str(out)])
        == 2
    )
    assert "valid budgets: " in capsys.readouterr().err and not out.exists()
    assert main(["train", "--profile", str(config), "--max-patch", "24", "--out", str(out)]) == 2
    assert "power of two" in capsys.readouterr().err and not out.exists()


def _images(folder: Path) -> Path:
    folder.mkdir()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(folder / "rgb.png")
    Image.new("L", (50, 70), 128).save(folder / "grey.jpg")  # greyscale, another size: converted and resized
    Image.new("RGBA", (64, 64), (0, 0, 255, 100)).save(folder / "alpha.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return folder


def test_predict(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _images(tmp_path / "images")
    assert main(["predict", str(tiny_model), str(folder), "--out", str(tmp_path / "p.csv")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 unreadable image(s)" in err and "broken.png" in err
    rows = list(csv.DictReader(io.StringIO((tmp_path / "p.csv").read_text())))
    assert sorted(Path(r["path"]).name for r in rows) == ["alpha.png", "grey.jpg", "rgb.png"]
    assert all(abs(sum(float(r[c]) for c in list(r)[3:]) - 1) < 1e-3 for r in rows)
    assert main(["predict", str(tiny_model), str(folder / "broken.png")]) == 1
    assert "no readable images" in capsys.readouterr().err


def test_predict_refuses_other_checkpoints(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    torch.save({"format": "geoad-detector/1"}, tmp_path / "other.pt")
    folder = _images(tmp_path / "images")
    assert main(["predict", str(tmp_path / "other.pt"), str(folder)]) == 2
    assert "not a Quadformer predictor checkpoint" in capsys.readouterr().err


def test_tokenize(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = _images(tmp_path / "images")
    assert (
        main(["tokenize", str(folder / "rgb.png"), "--tokens", "22", "--out", str(tmp_path / "m.png")]) == 0
    )
    assert "22 tokens" in capsys.readouterr().out and Image.open(tmp_path / "m.png").format == "PNG"
    assert (
        main(
            [
                "tokenize",
                str(folder / "grey.jpg"),
                "--model",
                str(tiny_model),
                "--out",
                str(tmp_path / "g.png"),
            ]
        )
        == 0
    )
    assert "16 tokens" in capsys.readouterr().out
    assert (
        main(["tokenize", str(folder / "grey.jpg"), "--out", str(tmp_path / "x.png")]) == 2
    )  # 70x50: no fit
    assert "does not fit max patch 32" in capsys.readouterr().err and not (tmp_path / "x.png").exists()
    assert main(["tokenize", str(folder / "rgb.png"), "--tokens", "5", "--out", str(tmp_path / "y.png")]) == 2
    assert "nearest valid budget: 4 or 7" in capsys.readouterr().err
    assert main(["tokenize", str(folder / "broken.png"), "--out", str(tmp_path / "z.png")]) == 1
    assert "skipped 1 unreadable" in capsys.readouterr().err


def test_train_on_an_image_folder(data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "pets"
    for split in ("train", "test"):
        for k, cls in enumerate(("cat", "dog")):
            (root / split / cls).mkdir(parents=True)
            for i in range(8):
                Image.new("RGB", (80, 60), (40 + 100 * k, 20 * i, 90)).save(root / split / cls / f"{i}.jpg")
    config = _config_file(tmp_path, data_dir)
    args = [
        "train",
        "--profile",
        str(config),
        "--data",
        f"folder:{root}",
        "--steps",
        "2",
        "--batch-size",
        "4",
    ]
    assert main([*args, "--out", str(tmp_path / "run")]) == 0
    assert json.loads(capsys.readouterr().out)["test_images"] == 16
    assert main(["predict", str(tmp_path / "run" / "model.pt"), str(root / "test" / "cat")]) == 0
    assert capsys.readouterr().out.splitlines()[0].endswith("cat,dog")
    assert main([*args, "--scorer", "oracle", "--out", str(tmp_path / "oracle")]) == 2
    assert "needs masks" in capsys.readouterr().err and not (tmp_path / "oracle").exists()
    for image in root.glob("*/*/*.jpg"):  # precomputed maps beside the images: now the oracle can train
        target = root / "maps" / image.relative_to(root).with_suffix(".png")
        target.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (20, 15), 255).save(target)
    assert main([*args, "--scorer", "oracle", "--out", str(tmp_path / "oracle")]) == 0
    assert json.loads(capsys.readouterr().out)["scorer"] == "oracle"
