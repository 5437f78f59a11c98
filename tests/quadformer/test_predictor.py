from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from quadformer.mosaic import draw_mosaic, mosaic_view
from quadformer.predictor import QuadformerPredictor
from quadformer.quadtree import QuadtreeSpec, quadtree_tokens
from quadformer.torch_model import CheckpointError


def test_other_checkpoints_are_refused(tmp_path: Path) -> None:
    torch.save(timm.create_model("vit_tiny_patch16_224", depth=1).state_dict(), tmp_path / "timm.pth")
    with pytest.raises(CheckpointError, match="not a Quadformer predictor checkpoint"):
        QuadformerPredictor.load(tmp_path / "timm.pth")
    torch.save({"format": "geoad-detector/1", "weights": {}}, tmp_path / "geoad.pt")
    with pytest.raises(CheckpointError, match="geoad-detector/1"):
        QuadformerPredictor.load(tmp_path / "geoad.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CheckpointError, match="not a torch checkpoint"):
        QuadformerPredictor.load(tmp_path / "text.pt")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        QuadformerPredictor.load(tmp_path / "missing.pt")


def test_mosaic(tmp_path: Path) -> None:
    image = torch.rand(3, 64, 64)
    t = quadtree_tokens(torch.rand(1, 64, 64), QuadtreeSpec(64, 64, 8, 32), 22)
    view = mosaic_view(image, t, base_patch=8)
    big = t.size[0].tolist().index(32)
    top, left = t.top[0, big].item(), t.left[0, big].item()
    block = view[:, top : top + 4, left : left + 4]  # a 32 px patch seen at 8 px: 4x4 blocks of one colour
    assert torch.allclose(
        block, image[:, top : top + 4, left : left + 4].mean((1, 2), keepdim=True).expand_as(block)
    )
    small = t.size[0].tolist().index(8)
    ts, ls = t.top[0, small].item(), t.left[0, small].item()
    assert torch.equal(
        view[:, ts : ts + 8, ls : ls + 8], image[:, ts : ts + 8, ls : ls + 8]
    )  # base size: as is
    path = draw_mosaic((image * 255).to(torch.uint8), t, tmp_path / "m.png", base_patch=8, scale=2)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (2 * 64 * 2 + 8, 128)
