"""The network: a DB-style text segmentation net (Liao et al., DBNet) with one more output, the scale predictor.

    image (B, 3, H, W), RGB in [0, 1]          H, W multiples of 32
      -> timm backbone (features_only), strides 4, 8, 16, 32
      -> FPN: lateral 1x1 convs, top-down sum, 3x3 smoothing to C/4 each, upsampled to 1/4 and concatenated (C)
      -> heads, each conv3x3 + two 2x transposed convs back to full resolution:
           probability P = sigmoid(.)         text kernel
           scale S (linear)                   log2(word height / canonical height) at text pixels
           threshold T = sigmoid(.)           training only (DB drops it at inference)
    training: (B, 3, H, W) = [P, S, T]; inference (eval mode): (B, 2, H, W) = [P, S]

The approximate binarisation B = 1 / (1 + exp(-k (P - T))), k = 50, is in ``binarize`` (training loss only).
Input normalisation is inside the model, so the exported ONNX graph takes plain [0, 1] RGB.
"""

from __future__ import annotations

from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
STRIDE = 32  # input sides must be multiples of this


def binarize(prob: Tensor, thresh: Tensor, k: float = 50.0) -> Tensor:
    """DB's differentiable binarisation."""
    return torch.sigmoid(k * (prob - thresh))


def _conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class Head(nn.Module):
    """conv 3x3 -> 2x transposed conv -> 2x transposed conv: from the 1/4 map to full resolution."""

    def __init__(self, channels: int, out: int = 1):
        super().__init__()
        mid = channels // 4
        self.body = nn.Sequential(
            _conv_bn_relu(channels, mid),
            nn.ConvTranspose2d(mid, mid, 2, stride=2),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(mid, out, 2, stride=2),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.body(x)


class FPN(nn.Module):
    def __init__(self, in_channels: list[int], channels: int):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, channels, 1, bias=False) for c in in_channels)
        self.smooth = nn.ModuleList(_conv_bn_relu(channels, channels // 4) for _ in in_channels)

    def forward(self, feats: list[Tensor]) -> Tensor:
        laterals = [conv(f) for conv, f in zip(self.lateral, feats, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):  # top-down: coarse levels added into finer ones
            laterals[i - 1] = laterals[i - 1] + F.interpolate(laterals[i], size=laterals[i - 1].shape[-2:])
        size = laterals[0].shape[-2:]
        outs = [
            F.interpolate(s(x), size=size) if i else s(x)
            for i, (s, x) in enumerate(zip(self.smooth, laterals, strict=True))
        ]
        return torch.cat(outs, dim=1)


class TextScaleNet(nn.Module):
    mean: Tensor
    std: Tensor

    def __init__(self, backbone: str = "lcnet_100", fpn_channels: int = 96):
        super().__init__()
        # from scratch: no pretrained weights can be had offline (a user's checkpoint loads over this)
        self.backbone = timm.create_model(
            backbone, features_only=True, pretrained=False, out_indices=(1, 2, 3, 4)
        )
        info: Any = self.backbone.feature_info  # timm's FeatureInfo
        reductions = info.reduction()
        if reductions != [4, 8, 16, 32]:
            raise ValueError(f"backbone {backbone!r} gives feature strides {reductions}; need 4, 8, 16, 32")
        self.fpn = FPN(info.channels(), fpn_channels)
        self.prob_head = Head(fpn_channels)
        self.scale_head = Head(fpn_channels)
        self.thresh_head = Head(fpn_channels)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: Tensor) -> Tensor:
        fused = self.fpn(self.backbone((image - self.mean) / self.std))
        prob = torch.sigmoid(self.prob_head(fused))
        scale = self.scale_head(fused)
        if not self.training:
            return torch.cat([prob, scale], dim=1)
        return torch.cat([prob, scale, torch.sigmoid(self.thresh_head(fused))], dim=1)


def pad_to_stride(image: Tensor, stride: int = STRIDE) -> Tensor:
    """Zero-pad (B, C, H, W) on the right and bottom to multiples of ``stride``."""
    h, w = image.shape[-2:]
    return F.pad(image, (0, (-w) % stride, 0, (-h) % stride))
