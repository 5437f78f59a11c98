"""GeoAD's scoring hot path: the transformation gather (every image under all 72 transformations) and the fit of
one Dirichlet per transformation."""

import pytest
import torch

geoad = pytest.importorskip("geoad", reason="the geoad package is not installed")

from geoad.dirichlet import fit_dirichlet  # noqa: E402
from geoad.transforms import TransformSet  # noqa: E402


def test_transformation_gather_72(benchmark):
    transforms = TransformSet("72")
    images = torch.rand(8, 1, 32, 32)  # the scoring batch on a CPU: 8 images -> 576 network inputs
    out = benchmark(transforms.expand, images)
    assert out.shape == (8 * 72, 1, 32, 32)


def test_dirichlet_fit_72(benchmark):
    log_p = torch.log_softmax(torch.randn(72, 2000, 72, dtype=torch.float64), dim=-1)  # [T, N images, T]
    alpha = benchmark(fit_dirichlet, log_p)
    assert alpha.shape == (72, 72) and bool((alpha > 0).all())
