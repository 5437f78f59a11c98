"""Benchmark task ``quadformer.clutter``: accuracy against cost for Quadformer (each scorer) and the vanilla ViT at
equal token budgets, on the cluttered Fashion-MNIST-on-photos set.

Each variant is trained with the profile's recipe (``configs/<profile>.yaml``; the same steps, augmentation and
optimiser for all), evaluated on the test split (backgrounds never seen in training), and timed with the yardstick
on the whole inference path: scorer + quadtree + ViT (GFLOPs per image include the scorer; the quadtree's argmax
steps have no multiply-adds, but their time is in images/s). The oracle scorer's masks are inputs, free at test
time: it is an upper bound for a saliency model, not a deployable variant. ToMe (training-free token merging) runs
on the largest budget's trained vanilla ViT with its merge rate chosen to match the FLOPs of each smaller budget.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from benchmarks.claims import Claim, Verdict, pair, record
from benchmarks.registry import Task, TaskContext
from benchmarks.yardstick import Cost, count_flops, measure
from effinfer_core.run_folder import RunFolder, RunFolderMismatchError, inputs_hash
from effinfer_core.trainer import TrainerFlags
from quadformer.predictor import QuadformerPredictor
from quadformer.scorers import canonical_scorer
from quadformer.tome import ToMeViT
from quadformer.torch_model import Quadformer
from quadformer.train import datamodule, fit, load_profile


@dataclass(frozen=True)
class Sweep:
    """A profile's ``bench`` section (configs/<profile>.yaml)."""

    tokens: tuple[int, ...]
    scorers: tuple[str, ...]  # "none" = the vanilla ViT on a grid of the same number of tokens
    steps: int | None  # None: the profile's
    tome: bool = True  # ToMe on the largest vanilla ViT, matched to the FLOPs of each smaller budget


def sweep_for(profile: str) -> Sweep:
    b = load_profile(profile, {})["bench"]
    return Sweep(tuple(b["tokens"]), tuple(b["scorers"]), b["steps"], b["tome"])


def _variant_config(ctx: TaskContext, scorer: str, tokens: int, sweep: Sweep) -> dict[str, Any]:
    overrides: dict[str, Any] = {"quadtree": {"scorer": scorer, "tokens": tokens}}
    if ctx.data_dir is not None:
        overrides["data"] = {"data_dir": str(ctx.data_dir)}
    if sweep.steps is not None:
        overrides["train"] = {"steps": sweep.steps}
    return load_profile(ctx.profile, overrides)


def _trained(ctx: TaskContext, config: dict[str, Any], out: Path) -> dict[str, Any]:
    """The variant's metrics, training it first unless ``out`` holds a finished run of this exact config (the
    resolved one: a changed default counts as a change, and a folder of other settings is started over)."""
    resolved = {
        **config,
        "quadtree": {**config["quadtree"], "scorer": canonical_scorer(config["quadtree"]["scorer"])},
    }
    key = inputs_hash(resolved)
    try:
        RunFolder(out).bind("variant", out.name, key, details=resolved)
    except RunFolderMismatchError:  # the harness owns its work folders: another config's run starts over
        shutil.rmtree(out)
        RunFolder(out).bind("variant", out.name, key, details=resolved)
    run = RunFolder(out)
    if run.is_done("fit", key):
        return run.read_json("metrics.json")
    accelerator = "gpu" if ctx.device.type == "cuda" else "cpu"
    metrics = fit(config, out, TrainerFlags(accelerator=accelerator, devices=1), log=ctx.log)
    run.mark_done("fit", key, artifacts=[out / "model.pt", out / "metrics.json"])
    return metrics


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
    sweep = sweep_for(ctx.profile)
    vanilla: dict[int, tuple[Path, float]] = {}  # budget -> (model.pt, FLOPs per image)
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
                _data_label(config, metrics["test_images"]),
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
            if scorer == "none":
                vanilla[tokens] = (out / "model.pt", cost.flops_per_sample or 0.0)
    if sweep.tome and len(vanilla) > 1:
        _run_tome(ctx, sweep, vanilla)


def _data_label(config: dict[str, Any], test_images: int) -> str:
    return f"clutter {config['data']['size']}px, {test_images} test images (unseen backgrounds)"


def _run_tome(ctx: TaskContext, sweep: Sweep, vanilla: dict[int, tuple[Path, float]]) -> None:
    """ToMe on the vanilla ViT of the largest budget, with r per block chosen so its FLOPs come closest to the
    vanilla ViT's at each smaller budget (the ViT cost Quadformer has at that budget)."""
    top = max(vanilla)
    base = QuadformerPredictor.load(vanilla[top][0], ctx.device)
    config = _variant_config(ctx, "none", top, sweep)
    dm = datamodule(config)
    dm.setup()
    batch = next(iter(dm.test_dataloader()))
    images = base.prepare(batch["image"][:4])
    for tokens in sorted(t for t in vanilla if t < top):
        target = vanilla[tokens][1]
        best_r, best_gap = 0, float("inf")
        for r in range(0, top // 2 + 1):  # FLOPs fall as r grows; a scan is a few cheap counts
            net = _with_tome(base, r)
            with torch.inference_mode():
                per_image = count_flops(partial(net, images)) / len(images)
            if abs(per_image - target) < best_gap:
                best_r, best_gap = r, abs(per_image - target)
            if per_image < target:
                break
        tome = QuadformerPredictor(_with_tome(base, best_r), base.network, base.classes)
        accuracy = tome.accuracy(dm.test_dataloader())
        cost = _cost(ctx, tome, batch, top)
        ctx.record(
            f"ToMe r={best_r} on vanilla N={top} (FLOPs of N={tokens})",
            _data_label(config, len(dm.test_set)),  # type: ignore[arg-type]
            {"accuracy": accuracy},
            cost,
            tokens=top,
            tome_r=best_r,
            matched_to_tokens=tokens,
            target_gflops=target / 1e9,
            gflops_per_image=(cost.flops_per_sample or 0) / 1e9,
        )


def _with_tome(predictor: QuadformerPredictor, r: int) -> Quadformer:
    net = predictor.net
    return Quadformer(ToMeViT(net.model, r), net.spec, net.num_tokens, None).eval()


LABEL_FREE = ("pixel-blur", "feature")  # scorers that need no labels and no masks
CHANCE = 0.1  # the cluttered set's 10 Fashion-MNIST classes
MIN_GAIN = 0.01  # one seed per variant here: a gain under a point is not told from seed noise


def judge_clutter(records: list[dict[str, Any]]) -> Verdict:
    """The paper's claim on this run: at every token budget, Quadformer with a label-free scorer is more accurate
    than the vanilla ViT fed the same number of tokens. The row shows the smallest budget."""
    budgets = sorted({int(r["extra"]["tokens"]) for r in records if "tokens" in r.get("extra", {})})
    gaps, rows = [], []
    for n in budgets:
        vanilla = record(records, f"vanilla ViT N={n}")
        quads = [q for s in LABEL_FREE if (q := record(records, f"Quadformer {s} N={n}")) is not None]
        if vanilla is None or not quads:
            continue
        best = max(quads, key=lambda q: q["quality"]["accuracy"])
        gaps.append((n, best["quality"]["accuracy"] - vanilla["quality"]["accuracy"]))
        rows.append((best, vanilla))
    if not rows:
        return Verdict(
            "not run at this profile", "-", "-", (None, None), (None, None), note="no vanilla/scorer pair"
        )
    both = pair(*rows[0], "accuracy", "samples_per_s")
    note = "accuracy gain per budget: " + ", ".join(f"N={n} {100 * g:+.1f} pt" for n, g in gaps)
    if max(r["quality"]["accuracy"] for row in rows for r in row) < 1.5 * CHANCE:
        return Verdict("not run at this profile", **both, note="every model at chance: " + note)
    verdict = "holds" if all(g > MIN_GAIN for _, g in gaps) else "does not hold"
    return Verdict(verdict, **both, note=note)


CLUTTER_CLAIM = Claim(
    "at the same number of tokens (the same ViT cost), mixed-resolution tokens from a label-free saliency quadtree "
    "are more accurate than a uniform grid of the resized image",
    "the same ViT on a uniform grid with the same number of tokens",
    judge_clutter,
)


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
            claim=CLUTTER_CLAIM,
        )
    ]
