"""Blockwise local distillation (BLD), driven by Lightning.

Every layer is independent, so one frozen parent forward per step feeds every candidate of every layer: hooks
capture each parent subblock's input and output, and each candidate is trained to reproduce the parent's output
from the parent's input, with the normalised MSE

    nmse = sum((y_candidate - y_parent)^2) / sum(y_parent^2)

summed over candidates (they share no parameters, so one backward of the sum trains each on its own loss).

Modes:
- decoupled: attention and FFN candidates separately (|A| + |F| per layer); input = the parent subblock's input,
  target = the parent subblock's residual delta.
- coupled: whole blocks (|A| x |F| pairs per layer), each pair a fresh copy of its two subblocks trained jointly;
  input = the layer input, target = the parent layer's delta. The trained pairs are stored in `library.coupled`.
The parent's own variants and no-ops are not trained (nothing to learn); in coupled mode the all-parent pair is
skipped for the same reason.

Scaling, precision and resuming are Lightning's: Trainer options pass through `trainer_kwargs` (accelerator,
devices, strategy, num_nodes, precision, ...); `ModelCheckpoint` writes `last.ckpt` every `ckpt_every` steps and a
rerun with the same `ckpt_dir` continues from it, on the batches the killed run had not reached
(`AustenDataModule.train_stream`), so it ends with the library of an uninterrupted run. Each DDP rank trains on its
own share of the budget's batches. The frozen parent is left out of checkpoints.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, cast

import lightning as L
import torch
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
from puzzle.block_config import BlockConfig
from puzzle.data import AustenDataModule
from puzzle.library import BlockLibrary
from puzzle.modeling_decilm import DeciLMForCausalLM

MODES = ("decoupled", "coupled")


def nmse_terms(y: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of squared error, sum of squared target), in float32."""
    y, target = y.float(), target.float()
    return (y - target).pow(2).sum(), target.pow(2).sum()


@torch.no_grad()
def parent_activations(parent: DeciLMForCausalLM, input_ids: torch.Tensor) -> list[dict[str, Any]]:
    """Per layer: {"attn_in", "attn_out", "ffn_in", "ffn_out", "pos"} of the parent (subblock inputs and deltas)."""
    acts: list[dict[str, Any]] = [{} for _ in parent.model.layers]
    handles = []
    for i, layer in enumerate(parent.model.layers):

        def attn_hook(_m, args, out, i=i):
            acts[i].update(attn_in=args[0], pos=args[1], attn_out=out)

        def ffn_hook(_m, args, out, i=i):
            acts[i].update(ffn_in=args[0], ffn_out=out)

        handles += [
            layer.attn_block.register_forward_hook(attn_hook),
            layer.ffn_block.register_forward_hook(ffn_hook),
        ]
    try:
        parent(input_ids=input_ids, use_cache=False)
    finally:
        for h in handles:
            h.remove()
    return acts


class BLDModule(L.LightningModule):
    """All trainable candidates of all layers; the parent is frozen and only provides targets."""

    def __init__(
        self,
        parent: DeciLMForCausalLM,
        library: BlockLibrary,
        datamodule: AustenDataModule,
        *,
        token_budget: int,
        mode: str = "decoupled",
        lr: float = 1e-4,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
    ) -> None:
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"BLD mode must be one of {MODES}, got {mode!r}")
        if any(b != library.parent_block for b in parent.block_configs):
            raise ValueError(
                "BLD needs the parent itself as teacher (every block equal to the parent's block)"
            )
        # unregistered: the frozen parent is neither trained, checkpointed nor wrapped by DDP/FSDP
        self.parent = FrozenTeacher(parent)
        self.library = library
        self.data, self.token_budget = datamodule, token_budget
        self.mode, self.lr, self.weight_decay, self.warmup_steps = mode, lr, weight_decay, warmup_steps
        self.library.requires_grad_(False)
        # (layer, kind, name, modules) for every trained candidate; kind is "attention", "ffn" or "block".
        self.candidates: list[tuple[int, str, str, tuple[nn.Module | None, ...]]] = []
        for i in range(library.num_layers):
            if mode == "decoupled":
                for a in library.attention_variants:
                    if not (a.no_op or library.is_parent(a)):
                        self.candidates.append(
                            (i, "attention", a.name, (library.attention_block(i, a.name),))
                        )
                for f in library.ffn_variants:
                    if not (f.no_op or library.is_parent(f)):
                        self.candidates.append((i, "ffn", f.name, (library.ffn_block(i, f.name),)))
                continue
            for a in library.attention_variants:
                for f in library.ffn_variants:
                    block = BlockConfig(a, f)
                    if block == library.parent_block or (a.no_op and f.no_op):
                        continue
                    if not library.has_coupled(i, block):
                        attn, ffn = library.attention_block(i, a.name), library.ffn_block(i, f.name)
                        library.add_coupled(i, block, copy.deepcopy(attn), copy.deepcopy(ffn))
                    self.candidates.append((i, "block", block.name, library.block(i, block)))
        for *_, modules in self.candidates:
            for m in modules:
                if m is not None:
                    m.requires_grad_(True)
        self._val_sums: dict[str, torch.Tensor] = {}
        self.heldout_nmse: dict[str, float] = {}
        self.train()

    @staticmethod
    def key(layer: int, kind: str, name: str) -> str:
        return f"L{layer:02d}/{kind}/{name}"

    def _candidate_terms(self, input_ids: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        # the teacher is the parent given to __init__
        acts = parent_activations(cast(DeciLMForCausalLM, self.parent.get(input_ids.device)), input_ids)
        out = {}
        for i, kind, name, modules in self.candidates:
            a = acts[i]
            if kind in ("attention", "ffn"):
                module = modules[0]
                assert module is not None  # a no-op subblock is no candidate
                if kind == "attention":
                    y, target = module(a["attn_in"], a["pos"]), a["attn_out"]
                else:
                    y, target = module(a["ffn_in"]), a["ffn_out"]
            else:
                attn, ffn = modules
                h = a["attn_in"]
                y = attn(h, a["pos"]) if attn is not None else torch.zeros_like(h)
                if ffn is not None:
                    y = y + ffn(h + y)
                target = a["attn_out"] + a["ffn_out"]
            out[self.key(i, kind, name)] = nmse_terms(y, target)
        return out

    def train_dataloader(self) -> DataLoader:
        return self.data.train_stream(self.token_budget, self.trainer)

    def training_step(self, ids: torch.Tensor, batch_idx: int) -> torch.Tensor:
        terms = self._candidate_terms(ids)
        nmse = {k: err / ref.clamp_min(1e-12) for k, (err, ref) in terms.items()}
        loss = torch.stack(list(nmse.values())).sum()
        self.log("bld/loss", loss, prog_bar=True)
        self.log_dict({f"nmse/{k}": v.detach() for k, v in nmse.items()})
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def validation_step(self, ids: torch.Tensor, batch_idx: int) -> None:
        for k, (err, ref) in self._candidate_terms(ids).items():
            s = torch.stack([err.detach(), ref.detach()])
            self._val_sums[k] = self._val_sums[k] + s if k in self._val_sums else s

    def on_validation_epoch_end(self) -> None:
        self.heldout_nmse = {}
        for k, s in self._val_sums.items():
            err, ref = self.trainer.strategy.reduce(s, reduce_op="sum")
            self.heldout_nmse[k] = float(err / ref.clamp_min(1e-12))
        self.log_dict({f"val_nmse/{k}": v for k, v in self.heldout_nmse.items()})

    def configure_optimizers(self) -> OptimizerLRSchedulerConfig:
        params = [p for p in self.library.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
        # linear warm-up, then cosine decay to 10% of lr over the token budget
        sched = warmup_cosine(opt, self.trainer.max_steps, self.warmup_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def run_bld(
    parent: DeciLMForCausalLM,
    library: BlockLibrary,
    datamodule: AustenDataModule,
    *,
    mode: str = "decoupled",
    token_budget: int,
    ckpt_dir: str | Path,
    trainer_kwargs: dict[str, Any] | None = None,
    lr: float = 1e-4,
    weight_decay: float = 0.0,
    warmup_steps: int = 0,
    eval_batches: int = 4,
    ckpt_every: int = 100,
) -> tuple[BlockLibrary, dict[str, Any]]:
    """Train every candidate for `token_budget` training tokens; resumes from `ckpt_dir/last.ckpt` if present.

    Returns the trained library (in place) and json-able metrics: per-candidate held-out nMSE before ("nmse_init")
    and after ("nmse") training, keyed "L03/attention/gqa_kv1", "L03/ffn/ffn_768" or "L03/block/linear+ffn_768",
    averaged over `eval_batches` batches of `datamodule.val_dataloader()`.
    """
    if token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    ckpt_dir = Path(ckpt_dir)
    datamodule.setup("fit")
    module = BLDModule(
        parent,
        library,
        datamodule,
        token_budget=token_budget,
        mode=mode,
        lr=lr,
        weight_decay=weight_decay,
        warmup_steps=warmup_steps,
    )
    kwargs: dict[str, Any] = {
        "accelerator": "auto",
        "devices": "auto",
        "max_epochs": -1,
        "limit_val_batches": eval_batches,
        "num_sanity_val_steps": 0,
        "enable_model_summary": False,
        "logger": CSVLogger(save_dir=str(ckpt_dir), name="logs"),
        "default_root_dir": str(ckpt_dir),
        "log_every_n_steps": 10,
    }
    kwargs.update(trainer_kwargs or {})
    # last.ckpt every ckpt_every steps, streamed to disk (no in-memory copy of a multi-GB checkpoint)
    checkpointing = checkpointed_trainer_kwargs(ckpt_dir, ckpt_every)
    kwargs["callbacks"] = [*kwargs.get("callbacks", []), *checkpointing["callbacks"]]
    kwargs["plugins"] = [*kwargs.get("plugins", []), *checkpointing["plugins"]]
    trainer = L.Trainer(**kwargs)
    # the budget counts tokens over all ranks: each step takes one batch per rank
    set_max_steps(trainer, datamodule.num_train_batches(token_budget))
    world = trainer.world_size

    val = datamodule.val_dataloader()
    trainer.validate(module, dataloaders=val, verbose=False)
    nmse_init = dict(module.heldout_nmse)
    trainer.fit(module, ckpt_path=resume_path(ckpt_dir))  # batches: `BLDModule.train_dataloader`
    # the final state too, so a rerun after completion trains nothing
    trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    trainer.validate(module, dataloaders=val, verbose=False)
    library.requires_grad_(False).eval()
    metrics = {
        "mode": mode,
        "steps": trainer.global_step,
        "tokens": trainer.global_step * datamodule.tokens_per_batch * world,
        "token_budget": token_budget,
        "lr": lr,
        "nmse_init": nmse_init,
        "nmse": dict(module.heldout_nmse),
    }
    return library, metrics
