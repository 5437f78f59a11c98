"""Output a person can follow: one line per unit of long work with elapsed time and an estimate, and library
chatter (Lightning's banners and tips, repeated warnings) sent to a log file instead of the screen."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L

Log = Callable[[str], None]


def stderr_log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


class Progress:
    """Progress of a loop of ``total`` units: ``progress.done(what)`` after each prints
    ``<prefix> 3/10 (30%) <what>, 2.1 min, ~4.9 min left``. Units skipped because they were done already count as
    done but not in the time estimate (pass ``skipped=True``)."""

    def __init__(self, total: int, prefix: str, log: Log = stderr_log):
        self.total, self.prefix, self.log = total, prefix, log
        self.count = self.timed = 0
        self.start = time.perf_counter()

    def done(self, what: str = "", *, skipped: bool = False) -> None:
        self.count += 1
        self.timed += 0 if skipped else 1
        elapsed = time.perf_counter() - self.start
        left = self.total - self.count
        estimate = f", ~{_minutes(elapsed / self.timed * left)} left" if self.timed and left else ""
        detail = f" {what}" if what else ""
        pct = 100 * self.count / max(1, self.total)
        self.log(
            f"{self.prefix} {self.count}/{self.total} ({pct:.0f}%){detail}, {_minutes(elapsed)}{estimate}"
        )


class LogProgress(L.Callback):
    """About ``lines`` log lines per fit: step, loss, time spent and an estimate of the time left. For output that
    goes to a file or a harness, where a progress bar would be a wall of carriage returns."""

    def __init__(self, log: Log, prefix: str, lines: int = 20):
        # not `self.log`: Lightning binds the LightningModule's log() onto callbacks under that name
        self.emit, self.prefix, self.lines = log, prefix, lines
        self._start, self._first_step, self._total = 0.0, 0, 0

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._first_step = trainer.global_step  # a resumed fit starts mid-way
        # a fit bounded by epochs alone has no max_steps: Lightning's own estimate of its steps stands in
        self._total = trainer.max_steps if trainer.max_steps > 0 else int(trainer.estimated_stepping_batches)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step, total = trainer.global_step, self._total
        if total <= 0 or (step % max(1, total // self.lines) and step != total):
            return
        elapsed = time.perf_counter() - self._start
        done = step - self._first_step
        left = f", ~{_minutes(elapsed / done * (total - step))} left" if done and step < total else ""
        loss = outputs.get("loss") if isinstance(outputs, Mapping) else outputs
        loss_text = f", loss {float(loss):.4f}" if loss is not None else ""
        self.emit(
            f"{self.prefix} step {step}/{total} ({100 * step / total:.0f}%){loss_text}, {_minutes(elapsed)}{left}"
        )


def progress_trainer_kwargs(log: Log | None, prefix: str) -> dict[str, Any]:
    """Trainer kwargs for a fit: a progress bar on a terminal, else (or with a ``log``) ~20 log lines per fit."""
    if log is None and sys.stderr.isatty():
        return {"enable_progress_bar": True, "enable_model_summary": False}
    return {
        "enable_progress_bar": False,
        "enable_model_summary": False,
        "callbacks": [LogProgress(log or stderr_log, prefix)],
    }


_LIBRARY_LOGGERS = ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "transformers")


@contextmanager
def library_output_to(log_file: str | Path) -> Iterator[Path]:
    """Inside the block, Lightning's and transformers' info lines (GPU/TPU banners, tips) and Python warnings go to
    ``log_file`` (appended) instead of the screen, which keeps only the command's own progress. Restored on exit."""
    log_file = Path(log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(log_file)
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    saved = []
    for name in (*_LIBRARY_LOGGERS, "py.warnings"):
        logger = logging.getLogger(name)
        saved.append((logger, logger.handlers[:], logger.propagate, logger.level))
        logger.handlers = [handler]
        logger.propagate = False
        logger.setLevel(logging.INFO)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")  # each distinct warning once per place, into the file
            logging.captureWarnings(True)
            try:
                yield log_file
            finally:
                logging.captureWarnings(False)
    finally:
        for logger, handlers, propagate, level in saved:
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        handler.close()
