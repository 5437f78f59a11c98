"""Train one model (vanilla or Quadformer) from a config, resumably, and save its predictor as one file.

A run folder holds ``ckpt/last.ckpt`` (Lightning, for resuming a killed run), ``model.pt`` (the predictor) and
``metrics.json``. Configs are profiles (``configs/{quick,cpu,full}.yaml``) merged over ``DEFAULTS``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import lightning as L
import torch

from effinfer_core.atomic import write_atomic
from effinfer_core.config import load_config, profile_path
from effinfer_core.progress import Log, progress_trainer_kwargs, stderr_log
from effinfer_core.run_folder import RunFolder, inputs_hash
from effinfer_core.trainer import TrainerFlags
from effinfer_core.training import checkpointed_trainer_kwargs, resume_path
from quadformer.data import ClutterSettings, ImageDataModule, has_maps
from quadformer.lightning_model import QuadformerModule
from quadformer.predictor import QuadformerPredictor
from quadformer.scorers import canonical_scorer

CONFIGS = Path(__file__).resolve().parents[2] / "configs"

DEFAULTS: dict[str, Any] = {
    "data": {
        "source": "clutter",  # clutter | folder:PATH | cifar10:PATH | cifar100:PATH
        "data_dir": None,  # data root (default $EFFINFER_DATA or ~/.cache/effinfer)
        "train": 8000,
        "test": 2000,
        "size": 128,
        "item_min": 20,
        "item_max": 36,
        "distractors": 2,
        "seed": 0,
        "batch_size": 64,
    },
    "model": {
        "vit": "vit_tiny_patch16_224",  # any timm ViT by name, never downloaded
        "checkpoint": None,  # a local timm checkpoint file to start from
        "position": "learned",  # learned (the ViT's table, sampled) | sinusoidal (the authors')
        "patch_size": 8,  # base patch: every token is brought to this size (null: the ViT's own)
        "depth": 6,  # null keeps the named ViT's own
        "embed_dim": 192,
        "num_heads": 3,
    },
    "quadtree": {
        "tokens": 64,
        "min_patch": 8,
        "max_patch": 32,
        "scorer": "pixel-blur",  # pixel-blur | feature[:<timm CNN>[@level]] | random | oracle | none (vanilla)
        "scorer_checkpoint": None,
    },
    "train": {
        "steps": 2000,
        "lr": 1.0e-3,
        "weight_decay": 0.05,
        "warmup_steps": 100,
        "label_smoothing": 0.1,
        "checkpoint_every": 200,
        "seed": 0,
    },
    # the harness task's sweep (quadformer.clutter): token budgets x scorers, each trained with this recipe
    "bench": {
        "tokens": [16, 64, 256],
        "scorers": ["none", "pixel-blur", "feature", "random", "oracle"],  # none: the vanilla ViT
        "steps": None,  # None: train.steps
        "tome": True,  # ToMe on the largest vanilla ViT, matched to the FLOPs of each smaller budget
    },
}


def load_profile(profile_or_file: str | Path, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A profile name (quick, cpu, full) or a config file, merged over the defaults; ``overrides`` as
    ``{"quadtree": {"tokens": 28}}`` (None values ignored)."""
    source = Path(profile_or_file)
    path = (
        source if source.suffix in (".yaml", ".yml", ".json") else profile_path(CONFIGS, str(profile_or_file))
    )
    config = load_config(path, DEFAULTS)
    return load_config(config, DEFAULTS, {k: v for k, v in (overrides or {}).items() if v is not None})


def datamodule(config: Mapping[str, Any]) -> ImageDataModule:
    d = config["data"]
    clutter = ClutterSettings(
        train=d["train"],
        test=d["test"],
        size=d["size"],
        item_min=d["item_min"],
        item_max=d["item_max"],
        distractors=d["distractors"],
        seed=d["seed"],
    )
    return ImageDataModule(d["source"], clutter, d["data_dir"], d["batch_size"], image_size=d["size"])


def validate(config: Mapping[str, Any]) -> None:
    """Refuse a config whose token budget, patch sizes or scorer cannot work, before anything is written."""
    from quadformer.lightning_model import vanilla_patch
    from quadformer.quadtree import QuadtreeSpec
    from quadformer.scorers import SCORERS

    q, size = config["quadtree"], config["data"]["size"]
    if q["scorer"] == "none":
        vanilla_patch(size, q["tokens"])
        return
    if q["scorer"].partition(":")[0] not in SCORERS:
        raise ValueError(
            f"unknown scorer {q['scorer']!r}; known scorers: {', '.join(SCORERS)}, none (vanilla)"
        )
    if q["scorer"] == "oracle" and not has_maps(config["data"]["source"]):
        raise ValueError(
            f"the oracle scorer needs masks, and {config['data']['source']} has none (a folder can bring them in "
            "PATH/maps/, mirroring its train/ and test/ folders): use another scorer"
        )
    QuadtreeSpec(size, size, q["min_patch"], q["max_patch"]).check_budget(q["tokens"])


def network_settings(config: Mapping[str, Any], num_classes: int) -> dict[str, Any]:
    m, q = config["model"], config["quadtree"]
    return {
        "vit": m["vit"],
        "num_classes": num_classes,
        "image_size": config["data"]["size"],
        "tokens": q["tokens"],
        "scorer": canonical_scorer(q["scorer"]),
        "min_patch": q["min_patch"],
        "max_patch": q["max_patch"],
        "position": m["position"],
        "patch_size": m["patch_size"],
        "vit_checkpoint": m["checkpoint"],
        "scorer_checkpoint": q["scorer_checkpoint"],
        "seed": config["train"]["seed"],
        "vit_kwargs": {"depth": m["depth"], "embed_dim": m["embed_dim"], "num_heads": m["num_heads"]},
    }


def run_key(config: Mapping[str, Any], network: Mapping[str, Any]) -> dict[str, Any]:
    """What a run folder's checkpoint depends on: the data, the resolved network and the recipe. The step budget
    is left out: a rerun with more steps continues the same run."""
    train = {k: v for k, v in config["train"].items() if k not in ("steps", "checkpoint_every")}
    return json.loads(json.dumps({"data": config["data"], "network": network, "train": train}))


def fit(
    config: Mapping[str, Any],
    out_dir: str | Path,
    flags: TrainerFlags | None = None,
    log: Log | None = stderr_log,
) -> dict[str, Any]:
    """Train, save ``model.pt`` and evaluate it on the test split; returns (and writes) the metrics. A rerun with a
    ``ckpt/last.ckpt`` left by a killed run resumes from it."""
    validate(config)
    out = Path(out_dir)
    t = config["train"]
    L.seed_everything(t["seed"], workers=True, verbose=False)
    dm = datamodule(config)
    dm.prepare_data()
    dm.setup()
    network = network_settings(config, dm.num_classes)
    key = run_key(config, network)
    # a folder holds one run: its checkpoint is never resumed under other settings
    RunFolder(out).bind("run", out, inputs_hash(key), details=key)
    module = QuadformerModule(network, t["lr"], t["weight_decay"], t["warmup_steps"], t["label_smoothing"])
    ckpt = checkpointed_trainer_kwargs(out / "ckpt", t["checkpoint_every"])
    progress = progress_trainer_kwargs(log, f"train {network['scorer']} N={network['tokens']}")
    trainer = L.Trainer(
        max_steps=t["steps"],
        max_epochs=-1,
        logger=False,
        default_root_dir=out,
        limit_val_batches=0,  # the test split is evaluated once, at the end
        num_sanity_val_steps=0,
        **(flags or TrainerFlags()).kwargs(),
        **{**ckpt, **progress, "callbacks": ckpt["callbacks"] + progress.get("callbacks", [])},
    )
    resume = resume_path(out / "ckpt")
    resumed_from = (
        int(torch.load(resume, map_location="cpu", weights_only=False)["global_step"]) if resume else 0
    )
    if resume and log:
        log(f"resuming from {resume} (step {resumed_from})")
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm, ckpt_path=resume)
    train_s = time.perf_counter() - start
    predictor = QuadformerPredictor(module.net, network, dm.classes)
    predictor.save(out / "model.pt")
    metrics = {
        "accuracy": predictor.accuracy(dm.test_dataloader()),
        "test_images": len(dm.test_set),  # type: ignore[arg-type]
        "steps": t["steps"],
        "resumed_from_step": resumed_from,
        "train_s": train_s,
        "tokens": network["tokens"],
        "scorer": network["scorer"],
    }
    write_atomic(out / "metrics.json", json.dumps(metrics, indent=2) + "\n")
    return metrics


def evaluate(model: str | Path, config: Mapping[str, Any], device: str = "cpu") -> dict[str, float]:
    """Accuracy of a saved predictor on the configured data's test split."""
    predictor = QuadformerPredictor.load(model, device)
    dm = datamodule(config)
    dm.setup()
    if dm.classes != predictor.classes:
        raise ValueError(
            f"{model} was trained on classes {predictor.classes[:5]}..., the data has {dm.classes[:5]}..."
        )
    with torch.inference_mode():
        return {"accuracy": predictor.accuracy(dm.test_dataloader()), "test_images": float(len(dm.test_set))}  # type: ignore[arg-type]
