"""`geoad fit | score | evaluate | bench`: anomaly detection with geometric transformations (Golan & El-Yaniv 2018).

geoad fit --dataset fashion-mnist --normal-class 0 --out tshirt.pt
geoad score tshirt.pt images/ --out scores.csv          # higher anomaly_score = more anomalous
geoad evaluate --dataset fashion-mnist --classes all --seeds 5 --out-dir runs/fmnist
geoad bench --profile quick
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from effinfer_core.trainer import TrainerFlags
from geoad.data import NAMED, DataError, load_images

if TYPE_CHECKING:  # the detector (torch, Lightning) is imported only by the commands that use it
    from geoad.detector import FitConfig


def _add_fit_options(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model and training (defaults: the paper's)")
    g.add_argument(
        "--backbone",
        default="wrn-10-4",
        help="wrn-<depth>-<widen> (paper: wrn-10-4 at 32x32, wrn-16-8 at 64x64) or timm:<model name> "
        "(any timm architecture, randomly initialised); default %(default)s",
    )
    g.add_argument(
        "--transforms",
        default="72",
        help="transformation set: 72 (paper: flip x shift x shift x rot90), 36, 18, 8 (flip x rot90), "
        "4 (rot90), or factors joined by '+' from flip, tx, ty, rot; default %(default)s",
    )
    g.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="passes over the self-labelled set (every image under every transformation); "
        "default ceil(200 / T): 3 for 72 transformations, as in the paper",
    )
    g.add_argument(
        "--max-steps", type=int, default=-1, help="stop after this many optimiser steps (-1: no cap)"
    )
    g.add_argument("--batch-size", type=int, default=128, help="default %(default)s (paper)")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate; default %(default)s (paper)")
    g.add_argument(
        "--train-limit",
        type=int,
        default=None,
        help="use at most this many normal training images (seeded subset; default: all)",
    )
    g.add_argument(
        "--dirichlet-limit",
        type=int,
        default=None,
        help="fit the Dirichlets on at most this many normal images (default: all)",
    )
    g.add_argument(
        "--no-channels-last", action="store_true", help="train in NCHW layout (default channels_last)"
    )
    g.add_argument(
        "--pad",
        type=int,
        default=None,
        help="zero padding per side before the network; default 2 for 28x28 images (-> 32), else 0",
    )
    TrainerFlags.add_arguments(p)


def _add_data_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir", type=Path, default=None, help="data root (default $EFFINFER_DATA or ~/.cache/effinfer)"
    )
    p.add_argument("--download", action="store_true", help="let torchvision download CIFAR-10/100 if missing")


def _fit_config(args: argparse.Namespace, seed: int) -> FitConfig:
    from geoad.detector import FitConfig

    # precision stays "auto" here: FitConfig resolves it, as the API does
    flags = TrainerFlags.from_args(args)
    return FitConfig(
        backbone=args.backbone,
        transforms=args.transforms,
        epochs=args.epochs,
        max_steps=args.max_steps,
        batch_size=args.batch_size,
        lr=args.lr,
        seed=seed,
        dirichlet_limit=args.dirichlet_limit,
        pad=args.pad,
        channels_last=not args.no_channels_last,
        accelerator=flags.accelerator,
        devices=flags.devices,
        strategy=flags.strategy,
        num_nodes=flags.num_nodes,
        precision=flags.precision,
        ckpt_dir=args.ckpt_dir,
        resume=args.resume,
    )


def _lightning_rank() -> int:
    """Lightning's global rank, read from the launcher's environment (and set by the Trainer's strategy)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    # an attribute set on the decorator function, which Lightning's stubs do not declare
    return rank_zero_only.rank  # type: ignore[attr-defined]


def _fit(args: argparse.Namespace) -> int:
    from effinfer_core.progress import library_output_to
    from geoad.data import GeoADDataModule
    from geoad.detector import GeoADDetector
    from geoad.transforms import TransformSet

    if args.out.exists() and not args.force:
        print(f"{args.out} exists: nothing to do (use --force to train again)", file=sys.stderr)
        return 0
    TransformSet(args.transforms)  # a bad spec fails here, before any data is read
    if (args.images is None) == (args.normal_class is None):
        raise DataError(
            "give either --normal-class (with --dataset) or --images (a folder/tensor of normal images)"
        )
    source = str(args.images) if args.images is not None else args.dataset
    datamodule = GeoADDataModule(
        source,
        args.normal_class,
        batch_size=args.batch_size,
        data_dir=args.data_dir,
        limit=args.train_limit,
        seed=args.seed,
        download=args.download,
    )
    with library_output_to(args.out.with_suffix(".log")):  # Lightning's banners and tips, not the screen
        detector = GeoADDetector.fit(datamodule, _fit_config(args, args.seed))
    if _lightning_rank() == 0:  # under DDP every process gets here; one writes
        detector.save(args.out)
        meta = detector.meta
        print(
            f"saved {args.out}: {meta['n_train_images']} normal images, {meta['train_pairs']} self-labelled pairs "
            f"in {meta['train_seconds']:.1f} s ({meta['train_pairs_per_s']:.0f} pairs/s)"
        )
    return 0


def _score(args: argparse.Namespace) -> int:
    from benchmarks.yardstick import select_device
    from effinfer_core.atomic import write_atomic
    from geoad.detector import GeoADDetector

    detector = GeoADDetector.load(args.artifact, select_device(args.device))
    detector.to(
        detector.device, bf16=not args.fp32, channels_last=not args.no_channels_last, compile=args.compile
    )
    prep = detector.preprocessing
    data = load_images(args.input, prep.channels, prep.raw_size if args.input.is_dir() else None)
    scores = detector.score(data.images, args.batch_size)
    names = data.names if data.names is not None else [str(i) for i in range(len(data))]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(
        [
            "path" if data.names is not None else "index",
            "anomaly_score",
            "normality_score",
            "simplified_score",
        ]
    )
    for row in zip(
        names, scores.anomaly.tolist(), scores.normality.tolist(), scores.simplified.tolist(), strict=True
    ):
        writer.writerow([row[0], *(f"{v:.6g}" for v in row[1:])])
    if args.out is None:
        sys.stdout.write(out.getvalue())
    else:
        write_atomic(args.out, out.getvalue())
        print(f"wrote {len(names)} scores to {args.out}", file=sys.stderr)
    if data.skipped:
        print(f"skipped {len(data.skipped)} unreadable file(s) (listed above)", file=sys.stderr)
    return 0


def _parse_classes(text: str) -> list[int | str] | None:
    if text == "all":
        return None
    return [int(c) if c.strip().lstrip("-").isdigit() else c.strip() for c in text.split(",") if c.strip()]


def _evaluate(args: argparse.Namespace) -> int:
    from effinfer_core.progress import library_output_to
    from geoad.data import load_dataset, resolve_class
    from geoad.evaluate import BASELINES, EvalConfig, evaluate, markdown_table

    baselines = () if args.baselines == "none" else tuple(b.strip() for b in args.baselines.split(","))
    unknown = [b for b in baselines if b not in BASELINES]
    if unknown:
        raise DataError(f"unknown baseline(s) {unknown}; choose from {', '.join(BASELINES)} or none")
    asked = _parse_classes(args.classes)
    classes = None
    if asked is not None:  # names -> indices, and a class that does not exist fails before any work
        test = load_dataset(args.dataset, "test", args.data_dir, args.download)
        classes = [resolve_class(test, c) for c in asked]
    config = EvalConfig(
        dataset=args.dataset,
        classes=classes,
        seeds=args.seeds,
        out_dir=args.out_dir,
        fit=_fit_config(args, 0),
        train_limit=args.train_limit,
        test_limit=args.test_limit,
        baselines=baselines,
        baseline_max_train=args.baseline_max_train,
        score_batch_size=args.score_batch_size,
        data_dir=args.data_dir,
        download=args.download,
    )
    with library_output_to(args.out_dir / "geoad.log"):  # Lightning's banners and tips, not the screen
        summary = evaluate(config)
    print(markdown_table(summary))
    print(f"results: {args.out_dir / 'results.md'}, {args.out_dir / 'results.json'}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geoad", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    fit = sub.add_parser(
        "fit",
        help="train a detector on normal images and save it as one file",
        description="Train the transformation classifier on the normal images (Lightning), fit "
        "one Dirichlet per transformation, and save everything scoring needs (weights, "
        "transformation set, Dirichlet parameters, preprocessing) to --out.",
    )
    fit.add_argument(
        "--dataset",
        default="fashion-mnist",
        help=f"{', '.join(NAMED)}, a folder with train/<class>/ (ImageFolder layout) or a .pt file "
        "with train_images/train_labels; default %(default)s",
    )
    fit.add_argument("--normal-class", default=None, help="index or name of the normal class in --dataset")
    fit.add_argument(
        "--images",
        type=Path,
        default=None,
        help="instead of --dataset/--normal-class: a folder of normal images or a .pt tensor [N,H,W] / "
        "[N,C,H,W] of them",
    )
    fit.add_argument("--out", type=Path, required=True, help="detector file to write (e.g. det.pt)")
    fit.add_argument("--force", action="store_true", help="train again even if --out exists")
    fit.add_argument("--seed", type=int, default=0, help="seed for initialisation, data order, subsets")
    fit.add_argument("--ckpt-dir", default=None, help="write Lightning checkpoints (last.ckpt) here")
    fit.add_argument("--resume", action="store_true", help="continue training from <ckpt-dir>/last.ckpt")
    _add_fit_options(fit)
    _add_data_options(fit)
    fit.set_defaults(func=_fit)

    score = sub.add_parser(
        "score",
        help="score images with a saved detector; write a CSV",
        description="Score a folder of image files (searched recursively; unreadable files are "
        "skipped and reported) or a .pt tensor [N,H,W] / [N,C,H,W] (uint8, or float "
        "in [0, 1]). Images of another size or channel count are converted, with a "
        "notice. CSV columns: path or index, anomaly_score (higher = more anomalous), "
        "normality_score (= -anomaly_score, the paper's), simplified_score.",
    )
    score.add_argument("artifact", type=Path, help="detector file written by `geoad fit`")
    score.add_argument("input", type=Path, help="folder of images or .pt tensor file")
    score.add_argument("--out", type=Path, default=None, help="CSV to write (default: standard output)")
    score.add_argument("--device", default=None, help="cpu, cuda, ... (default: cuda if present, else cpu)")
    score.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="images per network call (each becomes T inputs); default %(default)s",
    )
    score.add_argument("--fp32", action="store_true", help="score in float32 (default: bf16 where native)")
    score.add_argument("--no-channels-last", action="store_true", help="keep NCHW memory layout")
    score.add_argument(
        "--compile", action="store_true", help="torch.compile the network (slow start, faster)"
    )
    score.set_defaults(func=_score)

    ev = sub.add_parser(
        "evaluate",
        help="the paper's one-vs-rest protocol: per-class AUROC table, mean +- SEM",
        description="For each class: train on that class's training images, score the whole test "
        "split (that class normal, the rest anomalous), for several seeds; the same "
        "splits for the baselines. Finished stages are skipped on a rerun.",
    )
    ev.add_argument(
        "--dataset",
        default="fashion-mnist",
        help=f"{', '.join(NAMED)}, a folder with train/ and test/ subfolders (one folder per class), "
        "or a .pt file with train_images, train_labels, test_images, test_labels; "
        "default %(default)s",
    )
    ev.add_argument("--classes", default="all", help="'all' or comma-separated indices or names; default all")
    ev.add_argument("--seeds", type=int, default=5, help="runs per class; default %(default)s (paper)")
    ev.add_argument("--out-dir", type=Path, default=Path("runs/geoad"), help="default %(default)s")
    ev.add_argument(
        "--test-limit",
        type=int,
        default=None,
        help="score a seeded subset of this many test images (default: all, as the paper)",
    )
    ev.add_argument(
        "--baselines",
        default="ocsvm,ocsvm-hindsight,iforest",
        help="comma-separated from ocsvm (nu, gamma chosen on held-out normal images), "
        "ocsvm-hindsight (the paper's test-tuned choice), iforest; or none",
    )
    ev.add_argument(
        "--baseline-max-train",
        type=int,
        default=2000,
        help="OC-SVM/IsolationForest training subsample (OC-SVM is quadratic); default %(default)s",
    )
    ev.add_argument("--score-batch-size", type=int, default=16, help="images per scoring call")
    _add_fit_options(ev)
    _add_data_options(ev)
    ev.set_defaults(func=_evaluate, ckpt_dir=None, resume=False)  # evaluate checkpoints each run itself

    from benchmarks.bench_command import add_bench_command
    from geoad.bench import TASK_NAMES

    add_bench_command(
        sub,
        "geoad",
        "geoad.bench",
        "AUROC vs images/s for several transformation sets and the baselines, measured with benchmarks.yardstick.",
        list(TASK_NAMES),
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.data import SourceMissingError
    from effinfer_core.cli import run_command
    from geoad.detector import ArtifactError

    return run_command(args, (DataError, ArtifactError, SourceMissingError))


if __name__ == "__main__":
    sys.exit(main())
