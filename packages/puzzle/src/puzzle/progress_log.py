"""Progress of a Lightning fit as log lines, for runs whose output goes to a file (benchmarks), where no bar is drawn."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L


class LogProgress(L.Callback):
    """About `lines` log lines per fit: step, loss, time spent and an estimate of the time left."""

    def __init__(self, log: Callable[[str], None], prefix: str, lines: int = 20):
        # not `self.log`: Lightning binds the LightningModule's log() onto callbacks under that name
        self.emit, self.prefix, self.lines = log, prefix, lines
        self._start, self._first_step = 0.0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start, self._first_step = (
            time.perf_counter(),
            trainer.global_step,
        )  # a resumed fit starts mid-way

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, total = trainer.global_step, trainer.max_steps
        if total <= 0 or (step % max(1, total // self.lines) and step != total):
            return
        elapsed = time.perf_counter() - self._start
        done = step - self._first_step
        left = f", ~{elapsed / done * (total - step) / 60:.0f} min left" if done else ""
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        self.emit(
            f"{self.prefix} step {step}/{total} ({100 * step / total:.0f}%){loss_text}, "
            f"{elapsed / 60:.1f} min{left}"
        )
