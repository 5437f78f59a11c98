"""Benchmark task ``quadformer.clutter``: accuracy against cost for Quadformer (each scorer) and the vanilla ViT at
equal token budgets, on the cluttered Fashion-MNIST-on-photos set.

Each variant is trained with the profile's recipe (``configs/<profile>.yaml``; the same steps, augmentation and
optimiser for all), evaluated on the test split (backgrounds never seen in training), and timed with the yardstick
on the whole inference path: scorer + quadtree + ViT (GFLOPs per image include the scorer; the quadtree's argmax
steps have no multiply-adds, but their time is in images/s). The oracle scorer's masks are inputs, free at test
time: it is an upper bound for a saliency model, not a deployable variant.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.registry import Task, TaskContext
from benchmarks.yardstick import Cost, measure
from effinfer_core.atomic import write_atomic
from effinfer_core.trainer import TrainerFlags
from quadformer.predictor import QuadformerPredictor
from quadformer.scorers import canonical_scorer
from quadformer.train import datamodule, fit, load_profile


@dataclass(frozen=True)
class Sweep:
    tokens: tuple[int, ...]
    scorers: tuple[str, ...]  # "none" = the vanilla ViT on a grid of the same number of tokens
    steps: int | None  # None: the profile's


SWEEPS = {
    "quick": Sweep(tokens=(16, 64), scorers=("none", "pixel-blur", "feature", "random", "oracle"), steps=100),
    "cpu": Sweep(
        tokens=(16, 64, 256), scorers=("none", "pixel-blur", "feature", "random", "oracle"), steps=None
    ),
    "full": Sweep(
        tokens=(16, 64, 256), scorers=("none", "pixel-blur", "feature", "random", "oracle"), steps=None
    ),
}


def _variant_config(ctx: TaskContext, scorer: str, tokens: int, sweep: Sweep) -> dict[str, Any]:
    overrides: dict[str, Any] = {"quadtree": {"scorer": scorer, "tokens": tokens}}
    if ctx.data_dir is not None:
        overrides["data"] = {"data_dir": str(ctx.data_dir)}
    if sweep.steps is not None:
        overrides["train"] = {"steps": sweep.steps}
    return load_profile(ctx.profile, overrides)


def _trained(ctx: TaskContext, config: dict[str, Any], out: Path) -> dict[str, Any]:
    """The variant's metrics, training it first unless ``out`` holds a finished run of this exact config (the
    resolved one: a changed default counts as a change, and a stale folder is started over)."""
    done = out / "metrics.json"
    key = out / "config.json"
    resolved = {
        **config,
        "quadtree": {**config["quadtree"], "scorer": canonical_scorer(config["quadtree"]["scorer"])},
    }
    if key.is_file() and json.loads(key.read_text()) == resolved:
        if done.is_file():
            return json.loads(done.read_text())
    elif out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(key, json.dumps(resolved, indent=2, sort_keys=True) + "\n")
    accelerator = "gpu" if ctx.device.type == "cuda" else "cpu"
    return fit(config, out, TrainerFlags(accelerator=accelerator, devices=1), log=ctx.log)


def _cost(
    ctx: TaskContext, predictor: QuadformerPredictor, batch: dict[str, torch.Tensor], tokens: int
) -> Cost:
    """The yardstick on the whole path, scorer + quadtree + ViT, on a batch of test images."""
    n = 64 if ctx.device.type == "cuda" else 16
    images = predictor.prepare(batch["image"][:n])
    maps = batch["mask"][:n].float().to(ctx.device) if predictor.net.needs_maps else None
    return measure(
        lambda x, m: predictor.net(x, m),
        lambda: (images, maps),
        batch_size=len(images),
        device=ctx.device,
        tokens_per_sample=tokens,
        warmup=2,
        iters=5,
    )


def run_clutter(ctx: TaskContext) -> None:
    sweep = SWEEPS[ctx.profile]
    for tokens in sweep.tokens:
        for scorer in sweep.scorers:
            config = _variant_config(ctx, scorer, tokens, sweep)
            name = "vanilla" if scorer == "none" else scorer
            out = ctx.work_dir / f"{name}-N{tokens}"
            metrics = _trained(ctx, config, out)
            predictor = QuadformerPredictor.load(out / "model.pt", ctx.device)
            dm = datamodule(config)
            dm.setup()
            cost = _cost(ctx, predictor, next(iter(dm.test_dataloader())), tokens)
            ctx.record(
                f"{'vanilla ViT' if scorer == 'none' else 'Quadformer ' + scorer} N={tokens}",
                f"clutter {config['data']['size']}px, {metrics['test_images']} test images (unseen backgrounds)",
                {"accuracy": metrics["accuracy"]},
                cost,
                tokens=tokens,
                scorer=scorer,
                train_steps=metrics["steps"],
                train_s=metrics["train_s"],
                vit=config["model"]["vit"],
                depth=config["model"]["depth"],
                embed_dim=config["model"]["embed_dim"],
                gflops_per_image=(cost.flops_per_sample or 0) / 1e9,
            )
            if ctx.device.type == "cuda":
                torch.cuda.empty_cache()


def tasks() -> list[Task]:
    return [
        Task(
            name="quadformer.clutter",
            method="quadformer",
            description="Quadformer (pixel-blur, feature, random, oracle scorers) vs the vanilla ViT at equal tokens "
            "on cluttered Fashion-MNIST-on-photos: accuracy vs images/s and GFLOPs",
            run=run_clutter,
            quality_key="accuracy",
            quality_label="top-1 accuracy (test backgrounds unseen)",
        )
    ]
