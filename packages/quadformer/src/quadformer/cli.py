"""`quadformer data | train | evaluate | predict | tokenize | bench`: mixed-resolution ViT tokens from a saliency
quadtree (Ronen, Levy & Golbert, CVPR-W 2023).

quadformer data --profile quick                          # generate the cluttered set into the data cache
quadformer train --profile quick --scorer pixel-blur --tokens 64 --out runs/pb64
quadformer train --profile quick --scorer none --tokens 64 --out runs/vanilla64     # the vanilla ViT, same cost
quadformer evaluate runs/pb64/model.pt --profile quick
quadformer predict runs/pb64/model.pt photos/ --out predictions.csv
quadformer tokenize photo.jpg --scorer pixel-blur --tokens 64 --out mosaic.png
quadformer bench --profile quick
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from effinfer_core.trainer import TrainerFlags

EXIT_USAGE = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def _add_config(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("config (a profile, then these overrides)")
    g.add_argument(
        "--profile", default="quick", help="quick, cpu, full, or a YAML config file (default %(default)s)"
    )
    g.add_argument("--data", default=None, help="clutter (default), folder:PATH, cifar10:PATH, cifar100:PATH")
    g.add_argument("--data-dir", default=None, help="data root (default $EFFINFER_DATA or ~/.cache/effinfer)")
    g.add_argument("--train-images", type=int, default=None, help="clutter set: training images")
    g.add_argument("--test-images", type=int, default=None, help="clutter set: test images")
    g.add_argument("--seed", type=int, default=None, help="data and training seed")


def _add_model(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--tokens", type=int, default=None, help="token budget N = N0 + 3k (vanilla: a square grid)"
    )
    g.add_argument(
        "--scorer",
        default=None,
        help="pixel-blur, feature[:<timm CNN>[@level]], random, oracle, none (vanilla ViT)",
    )
    g.add_argument("--min-patch", type=int, default=None, help="smallest patch side (power of two)")
    g.add_argument("--max-patch", type=int, default=None, help="largest patch side (power of two)")


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    get = lambda name: getattr(args, name, None)  # noqa: E731 - a short local accessor
    return {
        "data": {
            "source": get("data"),
            "data_dir": get("data_dir"),
            "train": get("train_images"),
            "test": get("test_images"),
            "seed": get("seed"),
            "batch_size": get("batch_size"),
        },
        "model": {"vit": get("vit"), "checkpoint": get("checkpoint"), "position": get("position")},
        "quadtree": {
            "tokens": get("tokens"),
            "scorer": get("scorer"),
            "min_patch": get("min_patch"),
            "max_patch": get("max_patch"),
            "scorer_checkpoint": get("scorer_checkpoint"),
        },
        "train": {"steps": get("steps"), "seed": get("seed"), "lr": get("lr")},
    }


def _config(args: argparse.Namespace) -> dict[str, Any]:
    from quadformer.train import load_profile

    over = {k: {kk: vv for kk, vv in v.items() if vv is not None} for k, v in _overrides(args).items()}
    return load_profile(args.profile, {k: v for k, v in over.items() if v})


def _data(args: argparse.Namespace) -> int:
    from quadformer.data import generate_clutter
    from quadformer.train import datamodule

    dm = datamodule(_config(args))
    if dm.source != "clutter":
        print(
            f"error: `quadformer data` generates the clutter set; {dm.source} is read as it is",
            file=sys.stderr,
        )
        return EXIT_USAGE
    print(generate_clutter(dm.clutter, dm.data_dir, log=lambda m: print(m, file=sys.stderr)))
    return 0


def _train(args: argparse.Namespace) -> int:
    from effinfer_core.progress import library_output_to
    from quadformer.train import fit, validate

    config = _config(args)
    validate(config)  # a bad budget or patch size is refused before the run folder is made
    args.out.mkdir(parents=True, exist_ok=True)
    with library_output_to(args.out / "train.log"):
        metrics = fit(config, args.out, TrainerFlags.from_args(args))
    print(json.dumps(metrics))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from quadformer.train import evaluate

    print(json.dumps(evaluate(args.model, _config(args), args.device)))
    return 0


def _image_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            )
        else:
            files.append(path)
    return files


def read_images(paths: list[Path]) -> tuple[list[Path], list[Any], list[tuple[Path, str]]]:
    """Readable images as uint8 [3, H, W] (greyscale, palette and RGBA converted to RGB) and the skipped files."""
    import torch
    from PIL import Image, UnidentifiedImageError

    good, images, skipped = [], [], []
    for path in _image_files(paths):
        try:
            with Image.open(path) as im:
                rgb = im.convert("RGB")
        except (OSError, UnidentifiedImageError, ValueError) as err:
            skipped.append((path, str(err).splitlines()[0][:120] if str(err) else type(err).__name__))
            continue
        data = torch.frombuffer(bytearray(rgb.tobytes()), dtype=torch.uint8)
        images.append(data.view(rgb.height, rgb.width, 3).permute(2, 0, 1))
        good.append(path)
    return good, images, skipped


def _report_skipped(skipped: list[tuple[Path, str]]) -> None:
    if skipped:
        print(f"skipped {len(skipped)} unreadable image(s):", file=sys.stderr)
        for path, why in skipped:
            print(f"  {path}: {why}", file=sys.stderr)


def _predict(args: argparse.Namespace) -> int:
    from quadformer.predictor import QuadformerPredictor

    predictor = QuadformerPredictor.load(args.model, args.device)
    paths, images, skipped = read_images(args.images)
    _report_skipped(skipped)
    if not images:
        print(f"error: no readable images in {', '.join(map(str, args.images))}", file=sys.stderr)
        return 1
    rows = io.StringIO()
    writer = csv.writer(rows, lineterminator="\n")
    writer.writerow(["path", "class", "probability", *predictor.classes])
    for path, image in zip(paths, images, strict=True):
        probs = predictor.predict_proba(image.unsqueeze(0))[0]
        k = int(probs.argmax())
        writer.writerow(
            [str(path), predictor.classes[k], f"{float(probs[k]):.4f}", *(f"{float(p):.4f}" for p in probs)]
        )
    if args.out:
        from effinfer_core.atomic import write_atomic

        write_atomic(args.out, rows.getvalue())
        print(f"wrote {len(paths)} predictions to {args.out}", file=sys.stderr)
    else:
        sys.stdout.write(rows.getvalue())
    return 0


def _tokenize(args: argparse.Namespace) -> int:
    import torch

    from quadformer.mosaic import draw_mosaic
    from quadformer.quadtree import QuadtreeSpec, quadtree_tokens
    from quadformer.scorers import create_scorer

    paths, images, skipped = read_images([args.image])
    _report_skipped(skipped)
    if not images:
        return 1
    image = images[0]
    if args.model:
        from quadformer.predictor import QuadformerPredictor

        predictor = QuadformerPredictor.load(args.model, "cpu")
        x = predictor.prepare(image)
        tokens = predictor.tokenize(x)
        base = predictor.net.model.patch
    else:
        x = image.unsqueeze(0).float() / 255
        if args.size:
            x = torch.nn.functional.interpolate(
                x, size=(args.size, args.size), mode="bilinear", antialias=True
            )
        spec = QuadtreeSpec(x.shape[-2], x.shape[-1], args.min_patch or 8, args.max_patch or 32)
        tokens = quadtree_tokens(
            create_scorer(args.scorer or "pixel-blur", seed=args.seed or 0)(x),
            spec,
            args.tokens or spec.min_tokens,
        )
        base = spec.min_patch
    path = draw_mosaic(x[0], tokens, args.out, base_patch=base)
    sizes = torch.bincount(tokens.level[0]).tolist()
    print(f"{tokens.num_tokens} tokens (per size, largest first: {sizes}); mosaic: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="quadformer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser(
        "data",
        help="generate the cluttered set into the data cache",
        description="Generate the "
        "cluttered Fashion-MNIST-on-photos set of a profile once (seeded; cached by its settings).",
    )
    _add_config(data)
    data.set_defaults(func=_data)

    train = sub.add_parser(
        "train",
        help="train a vanilla ViT or a Quadformer; writes model.pt and metrics.json",
        description="Train one model from a profile (resumable: a rerun continues from "
        "OUT/ckpt/last.ckpt) and evaluate it on the test split.",
    )
    _add_config(train)
    _add_model(train)
    g = train.add_argument_group("training")
    g.add_argument("--out", type=Path, required=True, help="run folder")
    g.add_argument("--vit", default=None, help="timm ViT name (never downloaded)")
    g.add_argument("--checkpoint", default=None, help="local timm ViT checkpoint file to start from")
    g.add_argument(
        "--scorer-checkpoint", default=None, help="local timm CNN checkpoint for the feature scorer"
    )
    g.add_argument("--position", choices=["learned", "sinusoidal"], default=None, help="position embedding")
    g.add_argument("--steps", type=int, default=None, help="optimiser steps")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate")
    g.add_argument("--batch-size", type=int, default=None, help="batch size per device")
    TrainerFlags.add_arguments(train)
    train.set_defaults(func=_train)

    ev = sub.add_parser("evaluate", help="accuracy of a model.pt on a profile's test split")
    ev.add_argument("model", type=Path, help="model.pt written by `quadformer train`")
    _add_config(ev)
    ev.add_argument("--device", default="cpu", help="default %(default)s")
    ev.set_defaults(func=_evaluate)

    pr = sub.add_parser(
        "predict",
        help="class probabilities for image files (CSV)",
        description="Predict "
        "image files or folders; greyscale and RGBA are converted to RGB, any size is resized, "
        "unreadable files are skipped and reported (exit 1 only when none could be read).",
    )
    pr.add_argument("model", type=Path, help="model.pt written by `quadformer train`")
    pr.add_argument("images", type=Path, nargs="+", help="image files or folders")
    pr.add_argument("--out", type=Path, default=None, help="CSV file (default: standard output)")
    pr.add_argument("--device", default="cpu", help="default %(default)s")
    pr.set_defaults(func=_predict)

    tk = sub.add_parser(
        "tokenize",
        help="draw an image's token mosaic (PNG)",
        description="Tokenize one image "
        "with a model's scorer and budget (--model) or with --scorer/--tokens/--min-patch/--max-patch, "
        "and draw the token outlines beside what the ViT sees.",
    )
    tk.add_argument("image", type=Path)
    tk.add_argument("--out", type=Path, required=True, help="PNG file")
    tk.add_argument(
        "--model", type=Path, default=None, help="model.pt: use its scorer, budget and image size"
    )
    tk.add_argument("--size", type=int, default=None, help="resize the image to SIZE x SIZE first")
    tk.add_argument("--seed", type=int, default=None, help="seed of the random scorer")
    _add_model(tk)
    tk.set_defaults(func=_tokenize)

    from benchmarks.bench_command import add_bench_command

    add_bench_command(
        sub,
        "quadformer",
        "quadformer.bench",
        "Accuracy against tokens, GFLOPs and images/s for a sweep of token budgets, each scorer, the vanilla ViT and ToMe.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.data import SourceMissingError
    from effinfer_core.cli import run_command
    from quadformer.data import DataError
    from quadformer.torch_model import CheckpointError

    return run_command(args, (CheckpointError, DataError, SourceMissingError))


if __name__ == "__main__":
    sys.exit(main())
