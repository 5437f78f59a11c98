"""Lightning checkpoints written straight to disk.

Lightning's `TorchCheckpointIO` serialises a checkpoint into an in-memory buffer and then writes a copy of that
buffer, so saving holds two extra copies of the checkpoint in RAM. Coupled BLD of SmolLM2-135M (a 6.2 GB checkpoint
with Adam's moments, 21 GB resident while training) went past the 24 GiB of this repo's CPU machines at its first
checkpoint. Here `torch.save` streams into a temporary file beside the target, which is renamed over it when complete:
the same never-half-written file, without the copies.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from effinfer_core.atomic import atomic_file


class FileCheckpointIO(TorchCheckpointIO):
    """`TorchCheckpointIO` whose `save_checkpoint` streams to a temporary file and renames it (local paths only)."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} takes no storage_options")
        with atomic_file(path) as tmp:
            torch.save(checkpoint, tmp)
