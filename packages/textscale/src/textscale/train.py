"""Profiles, the generated data set, and training: what ``textscale data`` and ``textscale train`` run.

A profile (``configs/<profile>.yaml``) holds the data set's size, the network, the training budget and the
inference settings. The data set is generated once into ``<data root>/textscale-synth/<key>/{train,test}``, the key
being the hash of everything that decides its content. A trained model is one file (``torch.save`` of the network's
hyper-parameters and weights), written atomically.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from effinfer_core.atomic import atomic_file
from effinfer_core.config import load_config, profile_path
from effinfer_core.trainer import TrainerFlags

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DEFAULTS: dict[str, Any] = {
    "data": {"train_images": 200, "test_images": 20, "long_side": 2000, "seed": 0},
    "model": {"backbone": "lcnet_100", "fpn_channels": 96, "canonical_height": 24.0},
    "train": {
        "steps": 450,
        "batch_size": 16,
        "crop": 256,
        "lr": 0.002,
        "weight_decay": 0.0001,
        "warmup_steps": 30,
        "scale_weight": 1.0,
        "seed": 0,
        "checkpoint_every": 50,
        "num_workers": 0,
    },
    "inference": {
        "coarse_long_side": 512,
        "fixed_long_sides": [720, 1024, 1440, 2048],
        "keep_height": 32.0,
        "pad": 0.5,
        "thresh": 0.3,
        "box_thresh": 0.6,
        "unclip_ratio": 1.5,
    },
}
Log = Callable[[str], None]


class CheckpointError(ValueError):
    """A model file that is missing or not a TextScale model; the message says what to do."""


def load_profile(profile: str = "quick", config: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """A profile's settings (or a config file's, which may ``extends:`` a profile) over the defaults."""
    return load_config(Path(config) if config is not None else profile_path(CONFIGS, profile), DEFAULTS)


def synth_config(cfg: dict[str, Any]):
    from textscale.synth import SynthConfig

    return SynthConfig(long_side=int(cfg["data"]["long_side"]))


def dataset_dir(cfg: dict[str, Any], data_dir: str | os.PathLike[str] | None = None) -> Path:
    from benchmarks.data import data_root
    from textscale.synth import dataset_key

    data = cfg["data"]
    counts = {"train": int(data["train_images"]), "test": int(data["test_images"])}
    return data_root(data_dir) / "textscale-synth" / dataset_key(counts, int(data["seed"]), synth_config(cfg))


def ensure_dataset(
    cfg: dict[str, Any],
    data_dir: str | os.PathLike[str] | None = None,
    log: Log = print,
    splits: tuple[str, ...] = ("train", "test"),
) -> Path:
    """Generate the profile's splits unless they are there; returns the folder holding them."""
    from benchmarks.data import background_photos, font_files
    from textscale.synth import generate_split

    root = dataset_dir(cfg, data_dir)
    fonts, photos = font_files(data_dir), background_photos(data_dir)
    for split in splits:
        if (root / split).is_dir():
            continue
        count = int(cfg["data"][f"{split}_images"])
        start = time.perf_counter()
        generate_split(root / split, split, count, fonts, photos, int(cfg["data"]["seed"]), synth_config(cfg))
        log(f"generated {count} {split} images in {root / split} ({time.perf_counter() - start:.0f} s)")
    return root


def save_model(model: Any, path: str | os.PathLike[str], extra: dict[str, Any] | None = None) -> Path:
    """One file with what ``load_net`` needs: the network's hyper-parameters and weights."""
    payload = {
        "format": "textscale-model-v1",
        "hparams": {k: model.hparams[k] for k in ("backbone", "fpn_channels", "canonical_height")},
        "state_dict": model.net.state_dict(),
        **(extra or {}),
    }
    with atomic_file(Path(path)) as tmp:
        torch.save(payload, tmp)
    return Path(path)


def load_net(path: str | os.PathLike[str]) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The network (eval mode) and its hyper-parameters from a model file written by ``save_model``."""
    from textscale.torch_model import TextScaleNet

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"model file {path} does not exist; train one with `textscale train --out {path}`"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise CheckpointError(f"{path} is not a readable model file ({type(err).__name__}: {err})") from err
    if not isinstance(payload, dict) or payload.get("format") != "textscale-model-v1":
        raise CheckpointError(f"{path} is not a TextScale model file (written by `textscale train`)")
    hp = payload["hparams"]
    net = TextScaleNet(hp["backbone"], int(hp["fpn_channels"]))
    net.load_state_dict(payload["state_dict"])
    return net.eval(), hp


def train(
    cfg: dict[str, Any],
    train_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    flags: TrainerFlags | None = None,
    ckpt_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    log: Log | None = None,
) -> dict[str, Any]:
    """Train on an ICDAR15-layout folder and save the model to ``out``; returns steps, seconds, crops/s."""
    import lightning as L

    from effinfer_core.progress import progress_trainer_kwargs
    from effinfer_core.training import checkpointed_trainer_kwargs, resume_path
    from textscale.data import TextDataModule
    from textscale.lightning_model import TextScaleModel

    t, m = cfg["train"], cfg["model"]
    L.seed_everything(int(t["seed"]), workers=True, verbose=False)
    datamodule = TextDataModule(
        train_dir,
        crop=int(t["crop"]),
        batch_size=int(t["batch_size"]),
        canonical_height=float(m["canonical_height"]),
        seed=int(t["seed"]),
        num_workers=int(t["num_workers"]),
        length=int(t["steps"]) * int(t["batch_size"]),
    )
    datamodule.setup()  # a bad folder fails here, before the model is built
    model = TextScaleModel(
        m["backbone"],
        int(m["fpn_channels"]),
        float(m["canonical_height"]),
        lr=float(t["lr"]),
        weight_decay=float(t["weight_decay"]),
        warmup_steps=int(t["warmup_steps"]),
        scale_weight=float(t["scale_weight"]),
    )
    kwargs = progress_trainer_kwargs(log, "train")
    callbacks = kwargs.pop("callbacks", [])
    if ckpt_dir is not None:
        ckpt = checkpointed_trainer_kwargs(Path(ckpt_dir), int(t["checkpoint_every"]))
        callbacks += ckpt["callbacks"]
        kwargs["plugins"] = ckpt["plugins"]
    trainer = L.Trainer(
        max_steps=int(t["steps"]),
        max_epochs=-1,
        logger=False,
        enable_checkpointing=ckpt_dir is not None,
        callbacks=callbacks,
        **(flags or TrainerFlags()).kwargs(),
        **kwargs,
    )
    start = time.perf_counter()
    trainer.fit(
        model, datamodule, ckpt_path=resume_path(Path(ckpt_dir)) if resume and ckpt_dir is not None else None
    )
    seconds = time.perf_counter() - start
    stats = {
        "steps": int(trainer.global_step),
        "seconds": seconds,
        "crops_per_s": trainer.global_step * int(t["batch_size"]) / max(seconds, 1e-9),
        "loss": float(trainer.callback_metrics.get("loss", float("nan"))),
    }
    if trainer.is_global_zero:
        save_model(model, out, {"train": stats, "config": cfg})
    return stats
