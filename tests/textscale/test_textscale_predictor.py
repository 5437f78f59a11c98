"""The predictor API, training checkpoints and resume, ONNX export, visualisations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from effinfer_core.trainer import TrainerFlags
from textscale.export import OnnxNet, export_onnx
from textscale.postprocess import PostConfig
from textscale.predictor import TextDetector, TorchNet, as_rgb, draw_detections, read_image, save_png
from textscale.train import CheckpointError, load_net, train

from .conftest import tiny_config


def test_predictor_returns_quads_and_scores_per_image(tiny_model, tiny_split):
    detector = TextDetector.from_checkpoint(tiny_model, post=PostConfig(box_thresh=0.0))
    images = [read_image(tiny_split / "img_1.jpg"), np.zeros((100, 120), np.uint8)]
    pages = detector(images)
    assert len(pages) == 2
    for page in pages:
        assert page.polygons.ndim == 3 and page.polygons.shape[1:] == (4, 2)
        assert page.scores.shape == (len(page.polygons),)
        assert page.result.pixels > 0 and "coarse_net" in page.result.timings
    fixed = TextDetector.from_checkpoint(tiny_model, mode="fixed", long_side=256)
    h, w = images[0].shape[:2]  # long side 480 -> 256; the short side padded to a multiple of 32
    assert fixed([images[0]])[0].result.pixels == 256 * (-(-round(min(h, w) * 256 / 480) // 32) * 32)


def test_gray_rgba_and_float_images_are_converted():
    gray = np.full((5, 6), 7, np.uint8)
    assert as_rgb(gray).shape == (5, 6, 3) and as_rgb(gray)[0, 0].tolist() == [7, 7, 7]
    rgba = np.zeros((5, 6, 4), np.uint8)
    rgba[..., 3] = 255
    assert as_rgb(rgba).shape == (5, 6, 3)
    assert as_rgb(np.ones((2, 2, 3), np.float32))[0, 0, 0] == 255
    with pytest.raises(ValueError, match="HxW"):
        as_rgb(np.zeros((2, 2, 5), np.uint8))


def test_huge_image_is_shrunk_with_a_message_and_boxes_map_back(tiny_model):
    messages = []
    detector = TextDetector.from_checkpoint(
        tiny_model, max_side=300, log=messages.append, mode="fixed", long_side=256
    )
    image = np.zeros((400, 600, 3), np.uint8)
    image[100:140, 50:550] = 255
    page = detector.detect(image)
    assert messages and "600x400" in messages[0] and "300" in messages[0]
    if len(page.polygons):
        assert page.polygons[..., 0].max() <= 600 + 20


def test_model_file_round_trip_and_bad_files(tiny_model, tmp_path):
    net, hp = load_net(tiny_model)
    assert hp["backbone"] == "lcnet_050" and not net.training
    with pytest.raises(CheckpointError, match="does not exist"):
        load_net(tmp_path / "missing.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable model"):
        load_net(tmp_path / "bad.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a TextScale model"):
        load_net(tmp_path / "other.pt")


def test_training_resumes_from_its_checkpoint(tiny_split, tmp_path):
    torch.set_num_threads(1)
    flags = TrainerFlags(accelerator="cpu", devices=1)
    first = train(tiny_config(2), tiny_split, tmp_path / "a.pt", flags, tmp_path / "ckpt", log=lambda m: None)
    assert first["steps"] == 2 and (tmp_path / "ckpt" / "last.ckpt").is_file()
    resumed = train(
        tiny_config(3),
        tiny_split,
        tmp_path / "b.pt",
        flags,
        tmp_path / "ckpt",
        resume=True,
        log=lambda m: None,
    )
    assert resumed["steps"] == 3  # continued at step 2, one more step
    assert (tmp_path / "b.pt").is_file()


def test_onnx_export_gives_the_same_maps_and_boxes(tiny_model, tiny_split, tmp_path):
    net, hp = load_net(tiny_model)
    path = export_onnx(net, tmp_path / "model.onnx")
    image = read_image(tiny_split / "img_2.jpg")
    torch_maps = TorchNet(net)(image.astype(np.float32) / 255)
    onnx_maps = OnnxNet(path)(image.astype(np.float32) / 255)
    for a, b in zip(torch_maps, onnx_maps, strict=True):
        np.testing.assert_allclose(a, b, atol=2e-4)
    post = PostConfig(box_thresh=0.0)
    a = TextDetector(TorchNet(net), hp["canonical_height"], "fixed", 480, post=post).detect(image)
    b = TextDetector(OnnxNet(path), hp["canonical_height"], "fixed", 480, post=post).detect(image)
    assert len(a.polygons) == len(b.polygons) > 0
    np.testing.assert_allclose(a.polygons, b.polygons, atol=1.0)


def test_visualisations_are_pngs(tmp_path):
    image = np.zeros((50, 80, 3), np.uint8)
    drawn = draw_detections(image, np.array([[[5, 5], [40, 5], [40, 20], [5, 20]]], float))
    assert np.asarray(drawn)[5, 20].tolist() == [255, 0, 0]
    save_png(drawn, tmp_path / "d.png")
    save_png(np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10), tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "L" and Image.open(tmp_path / "d.png").size == (80, 50)


def test_read_image_limited_shrinks_huge_files_and_reports_the_factor(tmp_path):
    from textscale.predictor import read_image_limited

    big = np.zeros((1000, 4000, 3), np.uint8)
    big[:, 2000:] = 200
    Image.fromarray(big).save(tmp_path / "big.jpg", quality=95)
    small, factor = read_image_limited(tmp_path / "big.jpg", 1000)
    assert small.shape == (250, 1000, 3) and factor == 0.25
    assert small[:, 900].mean() > 150 and small[:, 100].mean() < 20  # the content, not a crop
    same, one = read_image_limited(tmp_path / "big.jpg", 8192)
    assert same.shape == (1000, 4000, 3) and one == 1.0
