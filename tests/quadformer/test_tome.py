from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from quadformer.quadtree import QuadtreeSpec, uniform_tokens
from quadformer.tome import ToMeViT, bipartite_soft_matching, merge_wavg
from quadformer.torch_model import MixedResolutionViT, create_vit


def _model() -> MixedResolutionViT:
    torch.manual_seed(0)
    return MixedResolutionViT(create_vit("vit_tiny_patch16_224", 10, 64, depth=3, patch_size=8).eval())


def test_r0_equals_the_plain_model() -> None:
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    tokens = uniform_tokens(QuadtreeSpec(64, 64, 8, 8), 2)
    with torch.no_grad():
        assert torch.allclose(ToMeViT(model, 0)(x, tokens), model(x, tokens), atol=1e-5)


def test_matching_merges_the_most_similar_pair_and_keeps_the_class_token() -> None:
    # tokens: cls, then A/B alternating; A token 1 (sequence 2) is a copy of B token 0 (sequence 1)
    metric = torch.tensor([[[1.0, 0, 0], [0, 1, 0], [0, 1, 0.01], [0, 0, 1], [1, 1, 0]]])
    x = torch.arange(5.0).view(1, 5, 1)
    merged, size = merge_wavg(bipartite_soft_matching(metric, 1), x, torch.ones(1, 5, 1))
    assert merged.shape == (1, 4, 1) and merged[0, 0, 0] == 0  # class token first, untouched
    assert sorted(size.flatten().tolist()) == [1, 1, 1, 2]
    assert torch.isclose(merged[size == 2], torch.tensor(1.5))  # sequence tokens 1 and 2 averaged
    assert (merged * size).sum() == x.sum()  # size-weighted sums are conserved


def test_merging_cuts_flops() -> None:
    model = _model()
    x = torch.rand(2, 3, 64, 64)
    tokens = uniform_tokens(QuadtreeSpec(64, 64, 8, 8), 2)
    flops = []
    for r in (0, 8, 16):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            out = ToMeViT(model, r)(x, tokens)
        flops.append(counter.get_total_flops())
        assert out.shape == (2, 10) and torch.isfinite(out).all()
    assert flops[0] > flops[1] > flops[2]
