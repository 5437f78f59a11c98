"""Lightning module: DB's losses on the probability, binary and threshold maps, plus the scale loss.

    L = BCE(P) with 3:1 hard-negative mining + alpha * dice(B) + beta * L1(T) + gamma * smoothL1(S)

with DB's alpha = 1, beta = 10; gamma (ours) = 1, the scale loss on the pixels of care words only. B is DB's
approximate binarisation of P and T with k = 50.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from effinfer_core.training import warmup_cosine
from textscale.torch_model import TextScaleNet, binarize


def balanced_bce(prob: Tensor, gt: Tensor, mask: Tensor, negative_ratio: float = 3.0) -> Tensor:
    """BCE over all positives and the hardest negatives, at most ``negative_ratio`` times as many (DB's OHEM)."""
    positive = gt * mask
    negative = (1 - gt) * mask
    n_pos = int(positive.sum())
    n_neg = min(int(negative.sum()), int(max(n_pos, 1) * negative_ratio))
    loss = F.binary_cross_entropy(prob.clamp(1e-6, 1 - 1e-6), gt, reduction="none")
    neg_loss = (loss * negative).flatten()
    hard = torch.topk(neg_loss, n_neg).values if n_neg > 0 else neg_loss[:0]
    return ((loss * positive).sum() + hard.sum()) / (n_pos + n_neg + 1e-6)


def dice_loss(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    inter = (pred * gt * mask).sum()
    union = (pred * mask).sum() + (gt * mask).sum() + 1e-6
    return 1 - 2 * inter / union


def masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    return (loss * mask).sum() / (mask.sum() + 1e-6)


def textscale_loss(
    out: Tensor, targets: Tensor, k: float = 50.0, weights: tuple[float, float, float] = (1, 10, 1)
) -> tuple[Tensor, dict[str, Tensor]]:
    """``out`` (B, 3, H, W) = [P, S, T]; ``targets`` (B, 6, H, W) as ``Targets.stacked``. Returns total and parts."""
    prob, scale, thresh = out[:, 0], out[:, 1], out[:, 2]
    gt, gt_mask, gt_thresh, thresh_mask, gt_scale, scale_mask = targets.unbind(1)
    parts = {
        "bce": balanced_bce(prob, gt, gt_mask),
        "dice": dice_loss(binarize(prob, thresh, k), gt, gt_mask),
        "l1": masked_mean((thresh - gt_thresh).abs(), thresh_mask),
        "scale": masked_mean(F.smooth_l1_loss(scale, gt_scale, reduction="none"), scale_mask),
    }
    alpha, beta, gamma = weights
    total = parts["bce"] + alpha * parts["dice"] + beta * parts["l1"] + gamma * parts["scale"]
    return total, parts


class TextScaleModel(L.LightningModule):
    def __init__(
        self,
        backbone: str = "lcnet_100",
        fpn_channels: int = 96,
        canonical_height: float = 24.0,
        lr: float = 2e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 50,
        k: float = 50.0,
        scale_weight: float = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = TextScaleNet(backbone, fpn_channels)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, targets = batch
        total, parts = textscale_loss(
            self.net(images), targets, self.hparams["k"], (1, 10, self.hparams["scale_weight"])
        )
        self.log("loss", total, prog_bar=True)
        for name, value in parts.items():
            self.log(f"loss_{name}", value)
        return total

    def configure_optimizers(self) -> Any:
        opt = torch.optim.AdamW(
            self.parameters(), lr=self.hparams["lr"], weight_decay=self.hparams["weight_decay"]
        )
        total = self.trainer.max_steps if self.trainer.max_steps > 0 else 1000
        schedule = warmup_cosine(opt, total, self.hparams["warmup_steps"])
        return {"optimizer": opt, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
