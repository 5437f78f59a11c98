"""GKD — global knowledge distillation of the whole child from the parent (Lightning).

    loss = cosine_weight * mean_l (1 - cos(h_child_l, h_parent_l))      hidden states after every layer l
         + kl_weight     * KL(p_parent || p_child)                       logits, temperature T (x T^2)
         + lm_weight     * CE(child, next token)                         off by default: the paper found it hurt

Every Puzzle child keeps the parent's L layers (a removed block is a no-op layer), so layer l of the child is
aligned with layer l of the parent; `hidden="final"` uses only the last (final-normed) state. The teacher is kept
out of the LightningModule's registered modules: it is neither trained nor saved in checkpoints, and Lightning's
strategies only wrap the student.

Budget: `token_budget` tokens = max_steps optimizer steps of batch_size x seq_len tokens (x devices). Checkpoints
(`last.ckpt` in `ckpt_dir`, every `checkpoint_every` steps and at the end) hold the student, optimizer and
scheduler; `run_gkd` resumes from one when present and the data stream skips the batches already seen, so a
killed-and-resumed run trains on the same batches as an uninterrupted one.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.types import OptimizerLRSchedulerConfig
from torch import nn
from torch.utils.data import DataLoader

from effinfer_core.training import (
    FrozenTeacher,
    checkpointed_trainer_kwargs,
    resume_path,
    set_max_steps,
    warmup_cosine,
)
from puzzle.data import AustenDataModule


def gkd_losses(
    child_out: Any, parent_out: Any, ids: torch.Tensor, *, hidden: str = "per_layer", temperature: float = 1.0
) -> dict[str, torch.Tensor]:
    """Cosine (hidden states), KL(parent || child) and LM losses from two model outputs (with hidden states)."""
    if hidden == "per_layer":
        pairs = list(zip(child_out.hidden_states[1:], parent_out.hidden_states[1:], strict=True))
    elif hidden == "final":
        pairs = [(child_out.hidden_states[-1], parent_out.hidden_states[-1])]
    else:
        raise ValueError(f"hidden must be 'per_layer' or 'final', got {hidden!r}")
    cosine = torch.stack(
        [(1 - F.cosine_similarity(c.float(), p.float(), dim=-1)).mean() for c, p in pairs]
    ).mean()
    t = temperature
    child_logp = F.log_softmax(child_out.logits.float() / t, dim=-1)
    parent_logp = F.log_softmax(parent_out.logits.float() / t, dim=-1)
    kl = (
        F.kl_div(child_logp.flatten(0, 1), parent_logp.flatten(0, 1), log_target=True, reduction="batchmean")
        * t
        * t
    )
    lm = F.cross_entropy(child_out.logits[:, :-1].flatten(0, 1).float(), ids[:, 1:].flatten())
    return {"cosine": cosine, "kl": kl, "lm": lm}


class GKDModule(L.LightningModule):
    """Student = the child (trained); teacher = the parent (frozen, unregistered)."""

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        datamodule: AustenDataModule,
        *,
        token_budget: int,
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_frac: float = 0.05,
        hidden: str = "per_layer",
        cosine_weight: float = 1.0,
        kl_weight: float = 1.0,
        lm_weight: float = 0.0,
        temperature: float = 1.0,
    ):
        super().__init__()
        self.student = student
        self._teacher = FrozenTeacher(teacher)  # unregistered: not trained, saved or wrapped by DDP/FSDP
        self.data = datamodule
        self.token_budget = token_budget
        self.lr, self.weight_decay, self.warmup_frac = lr, weight_decay, warmup_frac
        self.hidden, self.temperature = hidden, temperature
        self.weights = {"cosine": cosine_weight, "kl": kl_weight, "lm": lm_weight}
        if not any(self.weights.values()):  # else the loss is the int 0 and the first step fails on .detach()
            raise ValueError(
                "GKD needs at least one nonzero loss weight (cosine_weight, kl_weight, lm_weight)"
            )

    @property
    def teacher(self) -> nn.Module:
        return self._teacher.get(self.device)

    def on_fit_start(self) -> None:
        self.student.train()

    def train_dataloader(self) -> DataLoader:
        return self.data.train_stream(self.token_budget, self.trainer)

    def training_step(self, ids: torch.Tensor, batch_idx: int) -> torch.Tensor:
        with torch.no_grad():
            parent_out = self.teacher(input_ids=ids, use_cache=False, output_hidden_states=True)
        child_out = self.student(input_ids=ids, use_cache=False, output_hidden_states=True)
        losses = gkd_losses(child_out, parent_out, ids, hidden=self.hidden, temperature=self.temperature)
        # not empty: __init__ checks the weights
        terms = [w * losses[k] for k, w in self.weights.items() if w]
        loss = sum(terms[1:], terms[0])
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True)
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True)
        return loss

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        # before any clipping: the norm that shows a step losing its footing (and whether gradient_clip bites);
        # under FSDP each rank holds a shard of the gradients, so the logged (rank 0) norm is that shard's
        grads = [p.grad for p in self.student.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True)

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        params = [p for p in self.student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        total = max(1, int(self.trainer.max_steps))
        # linear warm-up, then cosine to 10% of lr
        sched = warmup_cosine(opt, total, int(self.warmup_frac * total))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def run_gkd(
    student: nn.Module,
    teacher: nn.Module,
    datamodule: AustenDataModule,
    *,
    token_budget: int,
    ckpt_dir: str | Path,
    checkpoint_every: int = 100,
    seed: int = 0,
    trainer_kwargs: dict[str, Any] | None = None,
    callbacks: Sequence[L.Callback] = (),
    gradient_clip: float = 0.0,
    **loss_kwargs: Any,
) -> dict[str, Any]:
    """Distil `student` from `teacher` for `token_budget` tokens; resumes from `ckpt_dir/last.ckpt` if present.

    `callbacks` are added to the Trainer's (e.g. a held-out evaluation every N steps). `gradient_clip` > 0 clips the
    gradients' global norm to it (Lightning's own clipping, so it holds under DDP and FSDP too); 0 leaves them as
    they are.

    Returns {"steps", "tokens", "first_loss", "last_loss", "history": [per-step losses]} (read from the CSV log; on
    ranks other than 0 of a multi-process run only "steps" and "tokens").
    """
    ckpt_dir = Path(ckpt_dir)
    L.seed_everything(seed, workers=True, verbose=False)
    module = GKDModule(student, teacher, datamodule, token_budget=token_budget, **loss_kwargs)
    kwargs = {
        "accelerator": "auto",
        "devices": "auto",
        "strategy": "auto",
        "num_nodes": 1,
        **{k: v for k, v in (trainer_kwargs or {}).items() if v is not None},
    }
    callbacks = [*callbacks, *kwargs.pop("callbacks", [])]
    # last.ckpt every checkpoint_every steps, streamed to disk (no in-memory copy of weights + Adam)
    checkpointing = checkpointed_trainer_kwargs(ckpt_dir, checkpoint_every)
    kwargs["plugins"] = [*kwargs.get("plugins", []), *checkpointing["plugins"]]
    # a resumed run logs beside, not over, the first
    attempt = len(list((ckpt_dir / "log").glob("version_*")))
    trainer = L.Trainer(
        max_epochs=-1,
        logger=CSVLogger(ckpt_dir, name="log", version=attempt),
        callbacks=[*checkpointing["callbacks"], *callbacks],
        enable_model_summary=False,
        log_every_n_steps=1,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        deterministic=True,
        gradient_clip_val=gradient_clip or None,
        **kwargs,
    )
    set_max_steps(trainer, datamodule.num_train_batches(token_budget))  # one batch per rank per step
    world = trainer.world_size
    # Lightning warns that a mid-epoch resume replays a non-resumable loader; ours starts past the batches already
    # trained on (`GKDModule.train_dataloader`), so the warning would only mislead.
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="You're resuming from a checkpoint that ended before the epoch"
        )
        trainer.fit(module, ckpt_path=resume_path(ckpt_dir))
    out = {"steps": trainer.global_step, "tokens": trainer.global_step * datamodule.tokens_per_batch * world}
    if (
        trainer.is_global_zero
    ):  # the CSV log is rank 0's, and rank 0 may be deleting it while other ranks get here
        out.update(_history(sorted((ckpt_dir / "log").glob("version_*/metrics.csv"))))
    return out


def _history(csv_paths: list[Path]) -> dict[str, Any]:
    """Per-step losses from the CSV logs of every attempt (a resumed step replaces the killed attempt's)."""
    by_step: dict[int, dict[str, float]] = {}
    for path in csv_paths:
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                if row.get("train/loss"):
                    by_step[int(row["step"])] = {
                        k.removeprefix("train/"): float(v)
                        for k, v in row.items()
                        if v and k.startswith("train/")
                    }
    history = [by_step[k] for k in sorted(by_step)]
    out: dict[str, Any] = {"history": history}
    if history:
        out["first_loss"], out["last_loss"] = history[0]["loss"], history[-1]["loss"]
    return out
