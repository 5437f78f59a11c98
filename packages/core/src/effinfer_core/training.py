"""Lightning pieces that the training recipes of several methods share.

- ``warmup_cosine``: linear warm-up, then cosine decay to a floor, stepped per optimiser step;
- ``steps_for_batches`` / ``set_max_steps``: a token (or sample) budget as optimiser steps, split over the ranks;
- ``FrozenTeacher``: a teacher network that is used but never trained, saved or wrapped by DDP/FSDP;
- ``checkpointed_trainer_kwargs``: a ``last.ckpt`` every N steps, streamed to disk (``FileCheckpointIO``), resumable.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from effinfer_core.checkpoint_io import FileCheckpointIO


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int = 0, floor: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """lr x (step + 1) / warmup for the first ``warmup_steps``, then a cosine from 1 down to ``floor`` at
    ``total_steps``; use with ``"interval": "step"``."""
    total = max(1, total_steps)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total - warmup_steps))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_for_batches(num_batches: int, world_size: int) -> int:
    """Optimiser steps that spend ``num_batches`` batches when each step takes one batch per rank (a remainder of
    fewer batches than ranks is left out)."""
    return max(1, num_batches // max(1, world_size))


def set_max_steps(trainer: L.Trainer, num_batches: int) -> int:
    """Cap ``trainer`` at the steps of a budget of ``num_batches`` (known only once the Trainer knows its world
    size); returns the steps."""
    steps = steps_for_batches(num_batches, trainer.world_size)
    trainer.fit_loop.epoch_loop.max_steps = steps
    return steps


class FrozenTeacher:
    """A teacher held outside ``nn.Module`` registration: a LightningModule that keeps one in an attribute does not
    train it, save it in checkpoints, or hand it to DDP/FSDP. ``get(device)`` moves it on first use there."""

    def __init__(self, module: nn.Module):
        self.module = module.eval().requires_grad_(False)
        self._device: torch.device | None = None

    def get(self, device: torch.device) -> nn.Module:
        if self._device != device:
            self.module.to(device)
            self._device = device
        return self.module


def checkpointed_trainer_kwargs(ckpt_dir: str | Path, every_n_steps: int) -> dict[str, Any]:
    """Trainer kwargs for resumable training: ``last.ckpt`` in ``ckpt_dir`` every ``every_n_steps`` steps and at
    the end of each epoch, streamed to disk. Pass ``ckpt_path=resume_path(ckpt_dir)`` to ``fit``."""
    checkpoint = ModelCheckpoint(
        dirpath=ckpt_dir,
        save_last=True,
        save_top_k=0,
        every_n_train_steps=every_n_steps,
        save_on_train_epoch_end=True,
    )
    return {"callbacks": [checkpoint], "plugins": [FileCheckpointIO()]}


def resume_path(ckpt_dir: str | Path) -> str | None:
    """``ckpt_dir/last.ckpt`` when a killed run left one, else None (a fresh fit)."""
    last = Path(ckpt_dir) / "last.ckpt"
    return str(last) if last.exists() else None
