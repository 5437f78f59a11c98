"""The transformation classifier: the paper's pre-activation Wide ResNet, or any timm model by name.

WRN-d-k (Zagoruyko & Komodakis 2016), pre-activation: a 3x3 stem of 16 channels, three groups of (d - 4) / 6
blocks of widths 16k, 32k, 64k (strides 1, 2, 2), each block BN-ReLU-conv3x3 twice with a 1x1 conv shortcut where
the shape changes, then BN-ReLU, global average pooling and a dense layer. WRN-10-4 (one block per group) is the
paper's network at 32x32; WRN-16-8 at 64x64. The paper pools with a fixed 8x8 window, which at 32x32 is this
global pool; at 64x64 we keep the global pool (the authors' Keras model flattens a 2x2 map there).
"""

from __future__ import annotations

import re

import torch.nn.functional as F
from torch import Tensor, nn


class PreActBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.dropout = dropout
        reshape = c_in != c_out or stride != 1
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if reshape else None

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(x))
        # a reshaping shortcut reads the pre-activated input, as in the original WRN code
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = F.dropout(F.relu(self.bn2(out)), self.dropout, self.training)
        return self.conv2(out) + skip


class WideResNet(nn.Module):
    def __init__(
        self, depth: int = 10, widen: int = 4, num_classes: int = 72, in_chans: int = 3, dropout: float = 0.0
    ):
        super().__init__()
        if (depth - 4) % 6 or depth < 10:
            raise ValueError(f"WRN depth must be 6n + 4 with n >= 1 (10, 16, 22, 28, ...), got {depth}")
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        blocks = []
        for group, stride in zip(range(3), (1, 2, 2), strict=True):
            c_in, c_out = widths[group], widths[group + 1]
            blocks += [
                PreActBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, dropout)
                for i in range(n)
            ]
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(widths[3])
        self.head = nn.Linear(widths[3], num_classes)
        self.num_features = widths[3]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward_features(self, x: Tensor) -> Tensor:
        x = F.relu(self.bn(self.blocks(self.stem(x))))
        return x.mean((-2, -1))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x))


_WRN = re.compile(r"wrn-(\d+)-(\d+)")


def create_model(backbone: str, num_classes: int, in_chans: int) -> nn.Module:
    """``wrn-<depth>-<widen>`` (e.g. ``wrn-10-4``) or ``timm:<name>`` for any timm architecture (no weights)."""
    if match := _WRN.fullmatch(backbone):
        return WideResNet(int(match[1]), int(match[2]), num_classes, in_chans)
    if backbone.startswith("timm:"):
        import timm

        name = backbone.removeprefix("timm:")
        if not timm.is_model(name):
            raise ValueError(f"timm has no model {name!r}; see timm.list_models()")
        # random init on purpose: the method learns its features from the transformations alone
        return timm.create_model(name, pretrained=False, num_classes=num_classes, in_chans=in_chans)
    raise ValueError(
        f"unknown backbone {backbone!r}: use wrn-<depth>-<widen> (e.g. wrn-10-4) or timm:<model name>"
    )
