from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch

from quadformer.quadtree import QuadtreeSpec, quadtree_tokens, uniform_tokens
from quadformer.scorers import create_scorer
from quadformer.torch_model import CheckpointError, MixedResolutionViT, Quadformer, create_vit, sincos_2d

VIT = "vit_tiny_patch16_224"


def _vit(size: int, **kw: object) -> torch.nn.Module:
    torch.manual_seed(0)
    vit = create_vit(VIT, 10, size, depth=2, **kw).eval()
    if vit.pos_embed is not None:
        vit.pos_embed.data.normal_()  # a table far from its tiny init, so a misplaced position shows
    return vit


@pytest.mark.parametrize("size", [32, 64])
def test_vanilla_grid_equals_timm_forward(size: int) -> None:
    vit = _vit(size)
    x = torch.rand(2, 3, size, size)
    with torch.no_grad():
        ours = MixedResolutionViT(vit)(x, uniform_tokens(QuadtreeSpec(size, size, 16, 16), 2))
        theirs = vit((x - 0.5) / 0.5)
    assert torch.allclose(ours, theirs, atol=1e-5)


def test_patches_are_area_averages() -> None:
    model = MixedResolutionViT(_vit(64))
    x = torch.zeros(1, 3, 64, 64)
    x[..., ::2, ::2] = x[..., 1::2, 1::2] = 1.0  # a one-pixel checkerboard: sampling would alias it
    spec = QuadtreeSpec(64, 64, 8, 64)
    t = quadtree_tokens(torch.zeros(1, 64, 64), spec, 4)  # one split: four 32 px patches
    assert t.size.tolist() == [[32, 32, 32, 32]]
    assert torch.allclose(model.patches(x, t), torch.full((1, 4, 3 * 16 * 16), 0.5))
    small = quadtree_tokens(torch.zeros(1, 64, 64), spec, 64)  # every patch 8 px: each pixel repeated 2x2
    p = model.patches(torch.arange(64.0).view(1, 1, 1, 64).expand(1, 3, 64, 64), small)[0, 1].view(3, 16, 16)
    assert p[0, 0].tolist() == [float(8 + i // 2) for i in range(16)]


def test_learned_positions_bilinear_at_float_centres() -> None:
    model = MixedResolutionViT(_vit(64))
    table = model.vit.pos_embed[0, 1:].reshape(4, 4, -1)
    t = quadtree_tokens(torch.zeros(1, 64, 64), QuadtreeSpec(64, 64, 8, 32), 4)  # four 32 px patches
    pos = model.positions(t)
    # a 32 px patch centred at (16, 16) px sits between grid cells 0 and 1 on both axes: the mean of four entries
    assert torch.allclose(pos[0, 0], table[:2, :2].reshape(4, -1).mean(0), atol=1e-6)


def test_sinusoidal_positions() -> None:
    vit = _vit(64, position="sinusoidal")
    assert vit.pos_embed is None
    model = MixedResolutionViT(vit, "sinusoidal")
    spec = QuadtreeSpec(64, 64, 8, 32)
    t = quadtree_tokens(torch.rand(2, 64, 64), spec, 13)
    pos = model.positions(t)
    assert torch.allclose(pos, sincos_2d(t.centres / 8, 192))
    assert torch.allclose(
        sincos_2d(torch.tensor([[0.0, 0.0]]), 8), torch.tensor([[0.0, 0, 1, 1, 0, 0, 1, 1]])
    )
    assert model(torch.rand(2, 3, 64, 64), t).shape == (2, 10)


def test_local_checkpoint_loads_unchanged(tmp_path: Path) -> None:
    vit = _vit(64)
    path = tmp_path / "vit.pth"
    torch.save({"state_dict": vit.state_dict()}, path)
    again = create_vit(VIT, 10, 64, depth=2, checkpoint=path).eval()
    x = torch.rand(1, 3, 64, 64)
    assert torch.equal(again(x), vit(x))
    other_classes = create_vit(VIT, 5, 64, depth=2, checkpoint=path)  # a new head, the rest loaded
    assert torch.equal(other_classes.blocks[0].attn.qkv.weight, vit.blocks[0].attn.qkv.weight)
    torch.save(timm.create_model("resnet10t").state_dict(), tmp_path / "cnn.pth")
    with pytest.raises(CheckpointError, match="another architecture"):
        create_vit(VIT, 10, 64, depth=2, checkpoint=tmp_path / "cnn.pth")


def test_quadformer_pipeline_checks_inputs() -> None:
    vit = MixedResolutionViT(_vit(64))
    spec = QuadtreeSpec(64, 64, 8, 32)
    model = Quadformer(vit, spec, 16, create_scorer("pixel-blur")).eval()
    assert model(torch.rand(3, 3, 64, 64)).shape == (3, 10)
    assert model.tokenize(torch.rand(3, 3, 64, 64)).num_tokens == 16
    with pytest.raises(ValueError, match="resize them first"):
        model(torch.rand(1, 3, 32, 64))
    with pytest.raises(ValueError, match="RGB"):
        model(torch.rand(1, 1, 64, 64))
    vanilla = Quadformer(vit, QuadtreeSpec(64, 64, 16, 16), 16, None)
    assert vanilla.num_tokens == 16 and vanilla.tokenize(torch.rand(1, 3, 64, 64)).size.unique().tolist() == [
        16
    ]


def test_mixed_patches_match_a_per_token_reference() -> None:
    model = MixedResolutionViT(create_vit(VIT, 10, 64, depth=1, patch_size=8))
    spec = QuadtreeSpec(64, 64, 4, 32)  # 4 px patches are repeated up to 8, 16 and 32 px averaged down
    x = torch.rand(2, 3, 64, 64)
    t = quadtree_tokens(torch.rand(2, 64, 64), spec, 37)
    assert len(t.size.unique()) >= 3
    got = model.patches(x, t)
    for b in range(2):
        for n, (top, left, size) in enumerate(
            zip(t.top[b].tolist(), t.left[b].tolist(), t.size[b].tolist(), strict=True)
        ):
            region = x[b : b + 1, :, top : top + size, left : left + size]
            want = torch.nn.functional.interpolate(region, size=(8, 8), mode="area")  # area average / repeat
            assert torch.allclose(got[b, n], want.flatten(), atol=1e-6), (b, n, size)
