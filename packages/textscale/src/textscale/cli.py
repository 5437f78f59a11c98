"""textscale: adaptive-scale text detection (Richardson et al., WACV 2020).

  textscale data                      generate the profile's synthetic train/test splits (fonts on real photos)
  textscale train --out model.pt      train the DB-style net with the scale channel (Lightning)
  textscale detect IMG... --checkpoint model.pt --out DIR
                                      quads per image (res_<name>.txt, ICDAR format) and a PNG of the detections
  textscale evaluate --checkpoint model.pt
                                      ICDAR 2015 P/R/hmean of adaptive, oracle and fixed scales on a test folder
  textscale export --checkpoint model.pt --out model.onnx
  textscale bench                     the repo's bench command for the textscale tasks

Exit status: 0 done, 1 nothing could be done (e.g. no readable image), 2 bad input (message says which).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from effinfer_core.trainer import TrainerFlags

if TYPE_CHECKING:
    from textscale.predictor import TextDetector

EXIT_NOTHING, EXIT_USAGE = 1, 2
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def _add_profile(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile", default="quick", help="configs/<profile>.yaml: quick, cpu, full (default %(default)s)"
    )
    p.add_argument(
        "--config", type=Path, default=None, help="a config file instead of the profile (may `extends:` one)"
    )
    p.add_argument(
        "--data-dir", type=Path, default=None, help="data root (default $EFFINFER_DATA or ~/.cache/effinfer)"
    )


def _data(args: argparse.Namespace) -> int:
    from textscale.train import ensure_dataset, load_profile

    root = ensure_dataset(load_profile(args.profile, args.config), args.data_dir, splits=tuple(args.splits))
    print(root)
    return 0


def _train(args: argparse.Namespace) -> int:
    from textscale.train import ensure_dataset, load_profile, train

    if args.out.exists() and not args.force:
        print(f"{args.out} exists: nothing to do (use --force to train again)", file=sys.stderr)
        return 0
    cfg = load_profile(args.profile, args.config)
    if args.steps is not None:
        cfg["train"]["steps"] = args.steps
    train_dir = (
        args.train_dir
        or ensure_dataset(cfg, args.data_dir, log=lambda m: print(m, file=sys.stderr)) / "train"
    )
    from effinfer_core.progress import library_output_to

    log_file = args.out.with_name(args.out.name + ".log")
    with library_output_to(
        log_file
    ):  # Lightning's banners and warnings go to the file, progress to the screen
        stats = train(cfg, train_dir, args.out, TrainerFlags.from_args(args), args.ckpt_dir, args.resume)
    print(
        f"saved {args.out}: {stats['steps']} steps in {stats['seconds']:.0f} s ({stats['crops_per_s']:.1f} crops/s)"
    )
    return 0


def collect_images(inputs: list[Path]) -> list[Path]:
    """Files as given, folders' image files (sorted, not recursive); a missing path is an error."""
    files: list[Path] = []
    for path in inputs:
        if path.is_dir():
            files.extend(
                sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            )
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path} does not exist")
    return files


def _detector(args: argparse.Namespace) -> TextDetector:
    from textscale.predictor import TextDetector, adaptive_config, post_config
    from textscale.train import load_net, load_profile

    inference = load_profile(args.profile, args.config)["inference"]
    net, hp = load_net(args.checkpoint)  # a missing or wrong model file fails here, before any output
    kwargs = {"mode": "fixed" if args.long_side else "adaptive", "long_side": args.long_side}
    kwargs.update(adaptive=adaptive_config(inference), post=post_config(inference), max_side=args.max_side)
    if getattr(args, "onnx", None) is not None:
        from textscale.export import OnnxNet

        if not args.onnx.is_file():
            raise FileNotFoundError(
                f"ONNX file {args.onnx} does not exist; write one with `textscale export`"
            )
        return TextDetector(OnnxNet(args.onnx), float(hp["canonical_height"]), **kwargs)
    from textscale.predictor import TorchNet

    return TextDetector(TorchNet(net, args.device), float(hp["canonical_height"]), **kwargs)


def _detect(args: argparse.Namespace) -> int:
    from textscale.icdar import write_boxes
    from textscale.predictor import draw_detections, read_image_limited, save_png

    images = collect_images(args.images)
    if not images:
        print(
            f"error: no image files ({', '.join(IMAGE_SUFFIXES)}) in {' '.join(map(str, args.images))}",
            file=sys.stderr,
        )
        return EXIT_NOTHING
    detector = _detector(args)
    skipped: list[str] = []
    done = boxes = 0
    for path in images:
        try:
            image, factor = read_image_limited(path, args.max_side)
        except (OSError, ValueError, SyntaxError) as err:
            skipped.append(f"{path} ({type(err).__name__}: {err})")
            continue
        if factor < 1:
            print(
                f"{path}: larger than --max-side {args.max_side}, detected on a copy shrunk by {factor:.3f}; "
                "boxes are in the original's pixels, the PNG shows the shrunk copy",
                file=sys.stderr,
            )
        page = detector.detect(image)
        stem = path.stem
        write_boxes(args.out / f"res_{stem}.txt", page.polygons / factor)
        save_png(draw_detections(image, page.polygons), args.out / f"{stem}.png")
        if args.debug:
            if page.result.coarse_prob is not None:
                save_png(page.result.coarse_prob, args.out / f"{stem}_coarse.png")
            if page.result.canvas is not None and page.result.canvas.size:
                save_png(page.result.canvas, args.out / f"{stem}_canvas.png")
        done += 1
        boxes += len(page.polygons)
        print(f"{path}: {len(page.polygons)} boxes, {page.result.pixels / 1e6:.2f} MP processed")
    for line in skipped:
        print(f"skipped unreadable image {line}", file=sys.stderr)
    print(f"{done} images, {boxes} boxes, {len(skipped)} skipped; results in {args.out}", file=sys.stderr)
    return 0 if done else EXIT_NOTHING


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def _evaluate(args: argparse.Namespace) -> int:
    from effinfer_core.atomic import write_atomic
    from textscale.evaluate import format_table, load_test_set, run_variant, variants
    from textscale.train import ensure_dataset, load_profile

    cfg = load_profile(args.profile, args.config)
    if args.coarse_long_side is not None:
        cfg["inference"]["coarse_long_side"] = args.coarse_long_side
    folder = args.test_dir or ensure_dataset(cfg, args.data_dir, _stderr, splits=("test",)) / "test"
    test_set = load_test_set(folder, args.limit)
    sides = args.long_sides or cfg["inference"]["fixed_long_sides"]
    if args.detector == "ppocr":
        from textscale.ppocr import ppocr_detector

        detector = ppocr_detector(cfg["inference"])
    elif args.checkpoint is None:
        raise ValueError("--checkpoint is required with --detector textscale (or use --detector ppocr)")
    else:
        args.long_side = None
        detector = _detector(args)
    if args.maps:
        if args.detector != "textscale":
            raise ValueError(
                "--maps reads our network's probability and scale maps: use it with --detector textscale"
            )
        from textscale.evaluate import map_diagnostics
        from textscale.train import load_net

        net, hp = load_net(args.checkpoint)
        maps = map_diagnostics(net, folder, float(hp["canonical_height"]))
        print("maps: " + ", ".join(f"{k} {v:.3f}" for k, v in maps.items()))
        if args.out is not None:
            write_atomic(args.out / "maps.json", json.dumps(maps, indent=2) + "\n")
    lines = args.detector == "ppocr"  # PP-OCR finds lines: scored against line boxes
    chosen = variants(detector, sides, args.variants, oracle_lines=lines)
    reports = [run_variant(n, fn, test_set, args.out, lines=lines) for n, fn in chosen]
    print(format_table(reports))
    if args.out is not None:
        write_atomic(args.out / "metrics.json", json.dumps(reports, indent=2) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from textscale.export import export_onnx
    from textscale.train import load_net

    net, _ = load_net(args.checkpoint)
    print(export_onnx(net, args.out))
    return 0


def _add_inference(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument(
        "--checkpoint", type=Path, required=required, help="model file written by `textscale train`"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, ... (default %(default)s)")
    p.add_argument(
        "--max-side", type=int, default=8192, help="larger images are shrunk first (default %(default)s)"
    )
    _add_profile(p)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="textscale", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser(
        "data",
        help="generate the synthetic train/test splits",
        description="Render the profile's "
        "train and test images (fonts-urw-base35 fonts on mate-backgrounds photos; the test split's "
        "fonts and photos are never used for training) once into the data cache, in ICDAR15 layout.",
    )
    _add_profile(p)
    p.add_argument(
        "--splits", nargs="+", choices=["train", "test"], default=["train", "test"], help="default both"
    )
    p.set_defaults(func=_data)

    p = sub.add_parser(
        "train",
        help="train the network",
        description="Train the DB-style net with the scale "
        "channel on random crops (Lightning); the model is one file written at the end.",
    )
    _add_profile(p)
    p.add_argument("--out", type=Path, required=True, help="model file to write (e.g. model.pt)")
    p.add_argument(
        "--train-dir",
        type=Path,
        default=None,
        help="an ICDAR15-layout folder (default: the generated train split)",
    )
    p.add_argument("--steps", type=int, default=None, help="override the profile's training steps")
    p.add_argument("--force", action="store_true", help="train again even if --out exists")
    p.add_argument(
        "--ckpt-dir", type=Path, default=None, help="write resumable Lightning checkpoints (last.ckpt)"
    )
    p.add_argument("--resume", action="store_true", help="continue from <ckpt-dir>/last.ckpt")
    TrainerFlags.add_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser(
        "detect",
        help="detect text in images",
        description="Detect text in image files or folders "
        "of them. Writes res_<name>.txt (ICDAR quads) and <name>.png (detections drawn) per image; "
        "--debug adds the coarse probability map and the packed canvas. Unreadable files are skipped "
        "and reported; gray and RGBA images are converted.",
    )
    p.add_argument("images", type=Path, nargs="+", help="image files or folders")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument(
        "--long-side",
        type=int,
        default=None,
        help="fixed-scale baseline at this long side instead of the adaptive two passes",
    )
    p.add_argument("--onnx", type=Path, default=None, help="run this exported graph with onnxruntime instead")
    p.add_argument("--debug", action="store_true", help="also write the coarse map and the canvas as PNGs")
    _add_inference(p)
    p.set_defaults(func=_detect)

    p = sub.add_parser(
        "evaluate",
        help="ICDAR 2015 scores of adaptive, oracle and fixed scales",
        description="Score "
        "every variant on an ICDAR15-layout folder (default: the profile's generated test split).",
    )
    p.add_argument(
        "--test-dir", type=Path, default=None, help="ICDAR15-layout folder (img_N.jpg + gt_img_N.txt)"
    )
    p.add_argument("--variants", nargs="+", default=None, help="adaptive, oracle, fixed-<side> (default all)")
    p.add_argument(
        "--long-sides", type=int, nargs="+", default=None, help="fixed scales (default: the profile's)"
    )
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--out", type=Path, default=None, help="folder for res_img_N.txt files and metrics.json")
    p.add_argument(
        "--detector",
        choices=["textscale", "ppocr"],
        default="textscale",
        help="textscale: the model in --checkpoint; ppocr: PP-OCRv4 (effinfer-data source ppocr-det) in the same "
        "variants, the coarse box's height as its scale, scored against line boxes",
    )
    p.add_argument(
        "--coarse-long-side", type=int, default=None, help="coarse pass size (default: the profile's)"
    )
    p.add_argument(
        "--maps",
        action="store_true",
        help="also pixel-level progress: probability on text vs background, scale error vs a constant guess",
    )
    _add_inference(p, required=False)
    p.set_defaults(func=_evaluate)

    p = sub.add_parser(
        "export",
        help="export the network to ONNX",
        description="Write the network as ONNX "
        "(dynamic height and width; input [0, 1] RGB, output probability and scale maps).",
    )
    p.add_argument("--checkpoint", type=Path, required=True, help="model file written by `textscale train`")
    p.add_argument("--out", type=Path, required=True, help="ONNX file to write")
    p.set_defaults(func=_export)

    from benchmarks.bench_command import add_bench_command

    add_bench_command(
        sub,
        "textscale",
        "textscale.bench",
        "hmean against images/s and pixels processed for adaptive, oracle, fixed scales and PP-OCRv4.",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from benchmarks.data import SourceMissingError
    from effinfer_core.cli import run_command
    from textscale.data import DataError
    from textscale.icdar import IcdarFormatError
    from textscale.train import CheckpointError

    return run_command(args, (CheckpointError, DataError, IcdarFormatError, SourceMissingError))


if __name__ == "__main__":
    sys.exit(main())
