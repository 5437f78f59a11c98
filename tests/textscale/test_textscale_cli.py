"""The command line: every subcommand's --help, detect's handling of bad input, evaluate, export, data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from textscale.cli import EXIT_NOTHING, EXIT_USAGE, main
from textscale.icdar import read_boxes


@pytest.mark.parametrize("command", ["data", "train", "detect", "evaluate", "export", "bench"])
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: textscale " + command in capsys.readouterr().out


def _images(folder):
    folder.mkdir()
    rgb = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "photo.jpg")
    Image.fromarray(rgb[..., 0]).save(folder / "gray.png")
    Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])).save(folder / "rgba.png")
    Image.fromarray(np.zeros((90, 90, 3), np.uint8)).save(folder / "blank.png")  # no text: an empty result
    data = (folder / "photo.jpg").read_bytes()
    (folder / "truncated.jpg").write_bytes(data[: len(data) // 3])
    (folder / "notes.png").write_text("not an image")
    return folder


def test_detect_skips_unreadable_converts_gray_and_rgba(tiny_model, tmp_path, capsys):
    folder = _images(tmp_path / "in")
    out = tmp_path / "out"
    code = main(["detect", str(folder), "--checkpoint", str(tiny_model), "--out", str(out), "--debug"])
    err = capsys.readouterr().err
    assert code == 0
    assert "4 images" in err and "2 skipped" in err and "truncated.jpg" in err and "notes.png" in err
    for stem in ("photo", "gray", "rgba", "blank"):
        boxes = read_boxes(out / f"res_{stem}.txt")
        assert all(b.points.shape == (4, 2) for b in boxes)
        assert Image.open(out / f"{stem}.png").size[0] in (160, 90)
        assert (out / f"{stem}_coarse.png").is_file()
    assert not (out / "res_truncated.txt").exists()
    assert not list(out.glob(".*tmp"))  # nothing half-written left behind


def test_detect_with_nothing_readable_fails(tiny_model, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (
        main(["detect", str(empty), "--checkpoint", str(tiny_model), "--out", str(tmp_path / "o")])
        == EXIT_NOTHING
    )
    assert "no image files" in capsys.readouterr().err
    (empty / "bad.jpg").write_bytes(b"junk")
    assert (
        main(["detect", str(empty), "--checkpoint", str(tiny_model), "--out", str(tmp_path / "o")])
        == EXIT_NOTHING
    )
    assert "0 images" in capsys.readouterr().err
    assert not (tmp_path / "o" / "res_bad.txt").exists()


def test_detect_missing_checkpoint_or_input_is_a_usage_error(tmp_path, capsys):
    folder = _images(tmp_path / "in")
    out = tmp_path / "out"
    assert (
        main(["detect", str(folder), "--checkpoint", str(tmp_path / "none.pt"), "--out", str(out)])
        == EXIT_USAGE
    )
    assert "does not exist" in capsys.readouterr().err and not out.exists()
    assert (
        main(["detect", str(tmp_path / "nope.jpg"), "--checkpoint", "x.pt", "--out", str(out)]) == EXIT_USAGE
    )
    assert "nope.jpg does not exist" in capsys.readouterr().err


def test_export_then_detect_with_onnx(tiny_model, tmp_path):
    onnx_file = tmp_path / "m.onnx"
    assert main(["export", "--checkpoint", str(tiny_model), "--out", str(onnx_file)]) == 0
    folder = _images(tmp_path / "in")
    out = tmp_path / "out"
    args = ["detect", str(folder / "photo.jpg"), "--checkpoint", str(tiny_model), "--out", str(out)]
    assert main([*args, "--onnx", str(onnx_file), "--long-side", "320"]) == 0
    assert (out / "res_photo.txt").is_file()


def test_evaluate_writes_metrics_for_each_variant(tiny_model, tiny_split, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--checkpoint", str(tiny_model), "--test-dir", str(tiny_split), "--out", str(out)]
    assert (
        main([*argv, "--variants", "adaptive", "oracle", "fixed-256", "--long-sides", "256", "--limit", "2"])
        == 0
    )
    table = capsys.readouterr().out
    assert "adaptive" in table and "fixed-256" in table
    reports = json.loads((out / "metrics.json").read_text())
    assert [r["variant"] for r in reports] == ["adaptive", "oracle", "fixed-256"]
    assert all(0 <= r["hmean"] <= 1 and r["images"] == 2 for r in reports)
    assert (out / "oracle" / "res_img_1.txt").is_file()
    assert main([*argv, "--variants", "fixed-999"]) == EXIT_USAGE


def test_evaluate_on_an_empty_folder_says_what_to_do(tiny_model, tmp_path, capsys):
    argv = ["evaluate", "--checkpoint", str(tiny_model), "--test-dir", str(tmp_path)]
    assert main(argv) == EXIT_USAGE
    assert "textscale data" in capsys.readouterr().err


def test_unknown_profile_is_refused(tmp_path, capsys):
    assert main(["data", "--profile", "nope", "--data-dir", str(tmp_path)]) == EXIT_USAGE
    assert "no profile 'nope'" in capsys.readouterr().err


def test_detect_huge_image_is_shrunk_with_a_message(tiny_model, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    image = np.zeros((300, 2400, 3), np.uint8)
    image[100:200, 100:2300] = 255
    Image.fromarray(image).save(folder / "wide.png")
    out = tmp_path / "out"
    argv = ["detect", str(folder), "--checkpoint", str(tiny_model), "--out", str(out), "--max-side", "600"]
    assert main([*argv, "--long-side", "600"]) == 0
    err = capsys.readouterr().err
    assert "larger than --max-side 600" in err and "0.250" in err
    assert Image.open(out / "wide.png").size == (600, 75)
    boxes = read_boxes(out / "res_wide.txt")
    assert all(b.points[:, 0].max() <= 2400 + 50 for b in boxes)


def test_evaluate_ppocr_in_the_same_variants_against_lines(tiny_split, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = ["evaluate", "--detector", "ppocr", "--test-dir", str(tiny_split), "--out", str(out)]
    assert main([*argv, "--variants", "oracle", "fixed-480", "--long-sides", "480"]) == 0
    reports = {r["variant"]: r for r in json.loads((out / "metrics.json").read_text())}
    assert (
        reports["oracle"]["recall"] > 0.5
    )  # ground-truth *line* regions on the canvas, scored against lines
    assert main(["evaluate", "--test-dir", str(tiny_split)]) == EXIT_USAGE
    assert "--checkpoint is required" in capsys.readouterr().err


def test_train_command_writes_the_model_once(tiny_split, tmp_path, capsys):
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "extends: "
        + str(Path(__file__).resolve().parents[2] / "packages/textscale/configs/quick.yaml")
        + "\n"
        "model: {backbone: lcnet_050, fpn_channels: 32}\n"
        "train: {batch_size: 2, crop: 96, warmup_steps: 1}\n"
    )
    out = tmp_path / "m.pt"
    argv = [
        "train",
        "--config",
        str(config),
        "--train-dir",
        str(tiny_split),
        "--out",
        str(out),
        "--steps",
        "2",
    ]
    assert main([*argv, "--accelerator", "cpu", "--devices", "1"]) == 0
    assert "saved" in capsys.readouterr().out and out.is_file() and (tmp_path / "m.pt.log").is_file()
    stamp = out.stat().st_mtime_ns
    assert main(argv) == 0  # exists: nothing to do
    assert "nothing to do" in capsys.readouterr().err and out.stat().st_mtime_ns == stamp


def test_data_without_fonts_says_how_to_fetch(tmp_path, capsys):
    assert main(["data", "--data-dir", str(tmp_path)]) == EXIT_USAGE
    assert "effinfer-data fetch fonts" in capsys.readouterr().err
    assert not (tmp_path / "textscale-synth").exists()


def test_dataset_is_generated_once(monkeypatch, tmp_path):
    from textscale import train as train_module

    monkeypatch.setattr(train_module, "dataset_dir", lambda cfg, data_dir=None: tmp_path / "ds")
    cfg = train_module.load_profile("quick")
    cfg["data"].update(train_images=2, test_images=1, long_side=320)
    root = train_module.ensure_dataset(cfg, log=lambda m: None)
    assert (
        len(list((root / "train").glob("img_*.jpg"))) == 2
        and len(list((root / "test").glob("img_*.jpg"))) == 1
    )
    stamp = (root / "train" / "img_1.jpg").stat().st_mtime_ns
    train_module.ensure_dataset(cfg, log=lambda m: None)
    assert (root / "train" / "img_1.jpg").stat().st_mtime_ns == stamp


def test_evaluate_maps_prints_pixel_progress(tiny_model, tiny_split, tmp_path, capsys):
    out = tmp_path / "eval"
    argv = [
        "evaluate",
        "--checkpoint",
        str(tiny_model),
        "--test-dir",
        str(tiny_split),
        "--out",
        str(out),
        "--maps",
    ]
    assert main([*argv, "--variants", "fixed-256", "--long-sides", "256", "--limit", "1"]) == 0
    assert "maps: prob_text" in capsys.readouterr().out
    assert set(json.loads((out / "maps.json").read_text())) >= {"scale_mae", "scale_mae_constant"}
    assert main(["evaluate", "--detector", "ppocr", "--test-dir", str(tiny_split), "--maps"]) == EXIT_USAGE
