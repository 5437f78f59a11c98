import pytest
import torch

from geoad.torch_model import WideResNet, create_model


def wrn_param_count(depth: int, k: int, classes: int, c_in: int) -> int:
    """Parameters of a pre-activation WRN counted by hand: convs (no bias), BN (2 per channel), dense."""
    n, widths = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
    total = c_in * 16 * 9
    for g in range(3):
        for i in range(n):
            a, b = widths[g] if i == 0 else widths[g + 1], widths[g + 1]
            total += 2 * a + a * b * 9 + 2 * b + b * b * 9 + (a * b if a != b or (i == 0 and g > 0) else 0)
    return total + 2 * widths[3] + widths[3] * classes + classes


@pytest.mark.parametrize("depth,k,c_in,size", [(10, 4, 1, 32), (16, 8, 3, 64), (10, 1, 3, 32)])
def test_wrn_shapes_and_size(depth, k, c_in, size):
    model = create_model(f"wrn-{depth}-{k}", 72, c_in)
    assert isinstance(model, WideResNet)
    assert sum(p.numel() for p in model.parameters()) == wrn_param_count(depth, k, 72, c_in)
    assert model(torch.randn(2, c_in, size, size)).shape == (2, 72)


def test_timm_backbone_by_name():
    model = create_model("timm:resnet10t", 8, 1)
    assert model(torch.randn(2, 1, 32, 32)).shape == (2, 8)


@pytest.mark.parametrize(
    "spec,match",
    [("wrn-11-4", "6n \\+ 4"), ("timm:no_such_net", "timm has no model"), ("vgg", "unknown backbone")],
)
def test_bad_backbones(spec, match):
    with pytest.raises(ValueError, match=match):
        create_model(spec, 8, 1)
