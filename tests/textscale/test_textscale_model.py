"""Targets (DB's shrink and border maps, the scale map), the network's outputs, the losses, the data module."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from textscale.data import DataError, TextCrops, TextDataModule, load_samples
from textscale.lightning_model import TextScaleModel, textscale_loss
from textscale.targets import make_targets
from textscale.torch_model import TextScaleNet, pad_to_stride

QUAD = np.array([[[10, 10], [110, 10], [110, 40], [10, 40]]], float)  # 100 x 30


def test_targets_shrink_border_and_scale():
    t = make_targets((64, 128), QUAD, np.array([True]), canonical_height=24)
    # shrunk by D = A (1 - 0.4^2) / L = 3000 * 0.84 / 260 = 9.7 px on each side
    ys, xs = np.nonzero(t.prob)
    assert xs.min() == pytest.approx(20, abs=1.5) and ys.max() == pytest.approx(30, abs=1.5)
    assert t.prob_mask.all()
    assert t.thresh.min() == pytest.approx(0.3) and t.thresh.max() == pytest.approx(0.7, abs=0.01)
    assert t.thresh_mask[10, 5] == 1 and t.thresh_mask[60, 120] == 0  # dilated quad only
    assert t.scale[25, 60] == pytest.approx(np.log2(30 / 24)) and t.scale_mask.sum() == pytest.approx(
        100 * 30, rel=0.1
    )


def test_dont_care_words_are_masked_not_targets():
    t = make_targets((64, 128), QUAD, np.array([False]), canonical_height=24)
    assert t.prob.sum() == 0 and t.scale_mask.sum() == 0
    assert t.prob_mask[25, 60] == 0 and t.prob_mask[60, 120] == 1


def test_network_outputs_probability_and_scale():
    net = TextScaleNet("lcnet_050", 32)
    x = torch.rand(2, 3, 96, 128)
    assert net(x).shape == (2, 3, 96, 128)
    net.eval()
    out = net(x)
    assert out.shape == (2, 2, 96, 128) and 0 <= out[:, 0].min() and out[:, 0].max() <= 1
    assert pad_to_stride(torch.zeros(1, 3, 70, 33)).shape == (1, 3, 96, 64)
    with pytest.raises(ValueError, match="strides"):
        TextScaleNet("vit_tiny_patch16_224")


def test_a_few_steps_fit_one_batch():
    torch.manual_seed(0)
    targets = torch.from_numpy(make_targets((128, 128), QUAD, np.array([True]), 24).stacked())[None]
    image = torch.zeros(1, 3, 128, 128)
    image[:, :, 10:40, 10:110] = 1.0
    model = TextScaleModel("lcnet_050", 32)
    opt = torch.optim.Adam(model.parameters(), 5e-3)
    losses = []
    for _ in range(12):
        loss, parts = textscale_loss(model(image), targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.6 * losses[0]
    assert set(parts) == {"bce", "dice", "l1", "scale"}


def test_data_module_crops_are_seeded_and_have_targets(tiny_split):
    samples = load_samples(tiny_split)
    a, b = TextCrops(samples, 128, 24, seed=1), TextCrops(samples, 128, 24, seed=1)
    (xa, ya), (xb, yb) = a[2], b[2]
    assert torch.equal(xa, xb) and torch.equal(ya, yb)
    assert xa.shape == (3, 128, 128) and ya.shape == (6, 128, 128)
    assert not torch.equal(TextCrops(samples, 128, 24, seed=2)[2][0], xa)
    dm = TextDataModule(tiny_split, crop=96, batch_size=2, length=4)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 3, 96, 96) and y.shape == (2, 6, 96, 96)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no img_N"):
        load_samples(tmp_path)
    with pytest.raises(DataError, match="not a folder"):
        load_samples(tmp_path / "nope")


def test_map_diagnostics_measure_probability_and_scale_error(tiny_split):
    from textscale.evaluate import map_diagnostics

    net = TextScaleNet("lcnet_050", 32)
    d = map_diagnostics(net, tiny_split, 24.0, crop=96, count=4)
    assert set(d) == {"prob_text", "prob_background", "scale_mae", "scale_mae_constant"}
    assert 0 <= d["prob_background"] <= 1 and d["scale_mae_constant"] > 0

    class Perfect(torch.nn.Module):  # reads the targets back: zero scale error
        def forward(self, x):
            return self.maps

    crops = TextCrops(load_samples(tiny_split), 96, 24.0, seed=0)
    perfect = Perfect()
    y = torch.stack([crops[i][1] for i in range(4)])
    perfect.maps = torch.stack([y[:, 0], y[:, 4]], dim=1)
    d = map_diagnostics(perfect, tiny_split, 24.0, crop=96, count=4)
    assert d["scale_mae"] == 0 and d["prob_background"] == 0
