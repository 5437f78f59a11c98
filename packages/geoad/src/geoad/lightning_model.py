"""Lightning module: train the network to tell which transformation was applied to a normal image.

A batch is (uint8 normal images, transformation labels) straight from the self-labelled data set; normalisation,
padding and the transformations run here, on the training device, as batched tensor operations.
"""

from __future__ import annotations

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from geoad.torch_model import create_model
from geoad.transforms import Preprocessing, TransformSet


class GeoADModel(L.LightningModule):
    def __init__(
        self,
        backbone: str = "wrn-10-4",
        transforms: str = "72",
        channels: int = 1,
        raw_size: int = 28,
        pad: int = 2,
        lr: float = 1e-3,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()  # into the checkpoints; the code reads the typed attributes below
        self.lr = lr
        self.transforms = TransformSet(transforms)
        self.preprocessing = Preprocessing(channels, raw_size, pad)
        self.model = create_model(backbone, len(self.transforms), channels)
        self.start_step = 0
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        images, labels = batch
        x = self.transforms.apply(self.preprocessing(images), labels)
        logits = self.model(x.contiguous(memory_format=self.memory_format))
        loss = F.cross_entropy(logits, labels)
        self.log("train_loss", loss, prog_bar=True)
        self.log("train_acc", (logits.argmax(-1) == labels).float().mean(), prog_bar=True)
        return loss

    def on_train_start(self) -> None:
        self.start_step = self.trainer.global_step  # > 0 when resumed from a checkpoint

    def configure_optimizers(self) -> torch.optim.Optimizer:
        # the paper: Adam with Keras' defaults (lr 1e-3, betas 0.9/0.999)
        return torch.optim.Adam(self.parameters(), lr=self.lr)
