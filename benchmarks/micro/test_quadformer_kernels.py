"""Quadformer's tokenizer: the batched quadtree (one masked argmax per split) on a batch of importance maps."""

import pytest
import torch

quadtree = pytest.importorskip("quadformer.quadtree", reason="the quadformer package is not installed")


@pytest.mark.parametrize(("side", "min_patch", "max_patch", "tokens"), [(256, 16, 64, 100), (128, 8, 32, 64)])
def test_quadtree_batch_128(benchmark, side, min_patch, max_patch, tokens):
    spec = quadtree.QuadtreeSpec(side, side, min_patch, max_patch)
    importance = torch.rand(
        128, side // min_patch, side // min_patch, generator=torch.Generator().manual_seed(0)
    )
    out = benchmark(quadtree.quadtree_tokens, importance, spec, tokens)
    assert out.num_tokens == tokens
