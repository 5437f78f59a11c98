"""One LightningModule for the vanilla ViT and Quadformer: the same steps, augmentation, loss and optimiser
(AdamW + warm-up/cosine), so the only difference between the two is the tokens.

Batches are dicts of uint8 images (and masks, for the oracle scorer); conversion to [0, 1] floats and the
augmentation (a random horizontal flip, of the mask too) run here, on the training device.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from effinfer_core.training import warmup_cosine
from quadformer.quadtree import QuadtreeSpec
from quadformer.scorers import create_scorer
from quadformer.torch_model import MixedResolutionViT, Position, Quadformer, create_vit


def vanilla_patch(image_size: int, tokens: int) -> int:
    """Patch side of the vanilla grid with ``tokens`` patches on a square image (an error names the valid ones)."""
    side = math.isqrt(tokens)
    if side * side != tokens or image_size % side or not (image_size // side) & (image_size // side - 1) == 0:
        valid = [
            (image_size // p) ** 2
            for p in (2**k for k in range(1, 12))
            if p <= image_size and image_size % p == 0
        ]
        raise ValueError(
            f"the vanilla ViT needs a square grid of power-of-two patches: {tokens} tokens do not tile a "
            f"{image_size} px image; valid budgets: {', '.join(map(str, sorted(valid)))}"
        )
    return image_size // side


def build_network(
    *,
    vit: str,
    num_classes: int,
    image_size: int,
    tokens: int,
    scorer: str,
    min_patch: int,
    max_patch: int,
    position: Position = "learned",
    patch_size: int | None = None,
    vit_checkpoint: str | Path | None = None,
    scorer_checkpoint: str | Path | None = None,
    seed: int = 0,
    vit_kwargs: dict[str, Any] | None = None,
) -> Quadformer:
    """Scorer + quadtree + ViT (``scorer="none"``: the vanilla ViT on a grid of ``tokens`` patches)."""
    kwargs = {k: v for k, v in (vit_kwargs or {}).items() if v is not None}
    if patch_size:
        kwargs["patch_size"] = patch_size
    if scorer == "none":
        p = vanilla_patch(image_size, tokens)
        spec, scoring = QuadtreeSpec(image_size, image_size, p, p), None
    else:
        spec = QuadtreeSpec(image_size, image_size, min_patch, max_patch)
        spec.check_budget(tokens)
        scoring = create_scorer(scorer, seed=seed, checkpoint=scorer_checkpoint)
    model = create_vit(vit, num_classes, image_size, checkpoint=vit_checkpoint, position=position, **kwargs)
    return Quadformer(MixedResolutionViT(model, position), spec, tokens, scoring)


class QuadformerModule(L.LightningModule):
    def __init__(
        self,
        network: dict[str, Any],
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        warmup_steps: int = 0,
        label_smoothing: float = 0.1,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.net = build_network(**network)

    def forward(self, images: Tensor, maps: Tensor | None = None) -> Tensor:
        return self.net(images, maps)

    def _inputs(self, batch: dict[str, Tensor], augment: bool) -> tuple[Tensor, Tensor | None]:
        images = batch["image"].float() / 255
        if self.net.needs_maps and "mask" not in batch:
            raise ValueError("the oracle scorer needs masks, and this data set has none: use another scorer")
        maps = batch["mask"].float() if self.net.needs_maps else None
        if augment:  # flip half the batch left-right (the same for both models, masks with their images)
            flip = torch.rand(images.shape[0], device=images.device) < 0.5
            images = torch.where(flip.view(-1, 1, 1, 1), images.flip(-1), images)
            if maps is not None:
                maps = torch.where(flip.view(-1, 1, 1), maps.flip(-1), maps)
        return images, maps

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        logits = self(*self._inputs(batch, augment=True))
        loss = F.cross_entropy(logits, batch["label"], label_smoothing=self.hparams["label_smoothing"])
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", (logits.argmax(-1) == batch["label"]).float().mean(), prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        logits = self(*self._inputs(batch, augment=False))
        self.log("val_acc", (logits.argmax(-1) == batch["label"]).float().mean(), prog_bar=True)

    def configure_optimizers(self) -> Any:
        decay = [
            p for n, p in self.named_parameters() if p.requires_grad and p.dim() > 1 and "pos_embed" not in n
        ]
        rest = [
            p for n, p in self.named_parameters() if p.requires_grad and (p.dim() <= 1 or "pos_embed" in n)
        ]
        optimizer = torch.optim.AdamW(
            [
                {"params": decay, "weight_decay": self.hparams["weight_decay"]},
                {"params": rest, "weight_decay": 0.0},
            ],
            lr=self.hparams["lr"],
        )
        schedule = warmup_cosine(optimizer, self.trainer.max_steps, self.hparams["warmup_steps"], floor=0.01)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
