from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
from torch import Tensor

from quadformer.quadtree import QuadtreeSpec, quadtree_tokens
from quadformer.scorers import FeatureScorer, Scorer, canonical_scorer, create_scorer


def _square_image() -> Tensor:
    """Flat grey with one bright 8x8 square at rows 40..47, columns 16..23 of a 64x64 image."""
    x = torch.full((1, 3, 64, 64), 0.5)
    x[:, :, 40:48, 16:24] = 1.0
    return x


def _small_tokens_at(scorer: Scorer, image: Tensor, maps: Tensor | None = None) -> set[tuple[int, int]]:
    t = quadtree_tokens(scorer(image, maps), QuadtreeSpec(64, 64, 8, 32), 10)
    return {
        (a, b)
        for a, b, s in zip(t.top[0].tolist(), t.left[0].tolist(), t.size[0].tolist(), strict=True)
        if s == 8
    }


def test_pixel_blur_finds_detail() -> None:
    scorer = create_scorer("pixel-blur")
    assert scorer(torch.full((2, 3, 32, 32), 0.3)).abs().max() == 0  # a flat image has no detail
    assert (40, 16) in _small_tokens_at(scorer, _square_image())


def test_oracle_uses_masks_and_needs_them() -> None:
    scorer = create_scorer("oracle")
    mask = torch.zeros(1, 64, 64)
    mask[0, 40:48, 16:24] = 1
    assert (40, 16) in _small_tokens_at(scorer, torch.rand(1, 3, 64, 64), mask)
    with pytest.raises(ValueError, match="needs precomputed maps"):
        scorer(torch.rand(1, 3, 64, 64))


def test_random_is_seeded() -> None:
    x = torch.rand(3, 3, 32, 32)
    a, b, c = (
        create_scorer("random", seed=1),
        create_scorer("random", seed=1),
        create_scorer("random", seed=2),
    )
    assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))
    assert not torch.equal(a(x), a(x))  # training: fresh noise every step
    a.eval()
    assert torch.equal(a(x), a(x))  # eval: reproducible predictions


def test_feature_scorer_loads_local_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(0)
    cnn = timm.create_model("resnet10t", pretrained=False)
    path = tmp_path / "resnet10t.pth"
    torch.save(cnn.state_dict(), path)
    loaded = create_scorer("feature:resnet10t@1", checkpoint=path)
    assert isinstance(loaded, FeatureScorer) and loaded.pretrained
    assert torch.equal(loaded.cnn.conv1[0].weight, cnn.conv1[0].weight)
    fresh = create_scorer("feature:resnet10t@1")
    assert not torch.equal(fresh.cnn.conv1[0].weight, cnn.conv1[0].weight)
    maps = loaded(torch.rand(2, 3, 64, 64))
    assert maps.shape == (2, 16, 16) and torch.isfinite(maps).all() and (maps >= 0).all()
    assert loaded(torch.full((1, 3, 64, 64), 0.5)).abs().max() < 1e-6  # blurring a flat image changes nothing
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_scorer("feature", checkpoint=tmp_path / "missing.pth")


def test_user_scorer_plugs_in() -> None:
    class Brightness(Scorer):
        def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
            return images.mean(dim=1)

    assert (40, 16) in _small_tokens_at(Brightness(), _square_image())


def test_unknown_scorer() -> None:
    with pytest.raises(ValueError, match="known scorers: pixel-blur"):
        create_scorer("saliency")
    with pytest.raises(ValueError, match="Unknown model"):
        create_scorer("feature:no_such_cnn")


def test_canonical_names_spell_out_defaults() -> None:
    assert canonical_scorer("feature") == "feature:mobilenetv3_small_050@2"
    assert canonical_scorer("feature:resnet10t") == "feature:resnet10t@2"
    assert canonical_scorer("pixel-blur") == "pixel-blur"
    assert create_scorer(canonical_scorer("feature")).cnn_name == "mobilenetv3_small_050"
