"""`python -m benchmarks run|report|compare|list|calibrate|data`: the one harness every method is measured with."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks.bench_command import add_bench_arguments, run_bench
from benchmarks.compare import DEFAULT_MAX_SLOWDOWN, compare_files
from benchmarks.registry import discover_tasks
from benchmarks.report import write_report
from benchmarks.runner import DEFAULT_RESULTS
from benchmarks.yardstick import calibrate, select_device, set_threads
from effinfer_core.atomic import write_atomic


def _run(args: argparse.Namespace) -> int:
    tasks, errors = discover_tasks()
    # a package that fails to load matters only when the run asked for it (or for everything)
    wanted = [
        m for name, m in errors.items() if not args.only or any(o.split(".")[0] == name for o in args.only)
    ]
    return run_bench(args, tasks, wanted)


def _report(args: argparse.Namespace) -> int:
    print(f"report: {write_report(args.results, args.report_dir or args.results.parent)}")
    return 0


def _compare(args: argparse.Namespace) -> int:
    noise = {}
    for item in args.noise:
        task, _, value = item.partition("=")
        try:
            noise[task] = float(value)
        except ValueError:
            raise ValueError(f"--noise takes TASK=VALUE (e.g. geoad.fmnist=0.01), got {item!r}") from None
    failed, summary = compare_files(args.old, args.new, max_slowdown=args.max_slowdown, noise=noise)
    if args.out:
        write_atomic(args.out, summary)
        print(f"comparison: {args.out}", file=sys.stderr)
    print(summary)
    return 1 if failed else 0


def _list(args: argparse.Namespace) -> int:
    tasks, errors = discover_tasks()
    for task in tasks:
        print(f"{task.name:32s} {task.method:10s} {task.description}")
    for message in errors.values():
        print(f"error: {message}", file=sys.stderr)
    return 1 if errors else 0


def _calibrate(args: argparse.Namespace) -> int:
    threads = set_threads(args.threads)
    calibration = calibrate(select_device(args.device))
    print(
        f"{calibration.device_name} ({threads} threads): fp32 {calibration.fp32_tflops} TFLOP/s, "
        f"bf16 {calibration.bf16_tflops or 'n/a'} TFLOP/s"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present, else cpu)"
        )
        p.add_argument(
            "--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)"
        )

    run = sub.add_parser("run", help="run the registered tasks, append results, write the report")
    add_bench_arguments(run)
    run.set_defaults(func=_run)

    rep = sub.add_parser("report", help="write report.md and plots from a results file")
    rep.add_argument("--results", type=Path, default=DEFAULT_RESULTS)
    rep.add_argument("--report-dir", type=Path, default=None)
    rep.set_defaults(func=_report)

    cmp = sub.add_parser(
        "compare",
        help="compare two results files; exit 1 on a regression",
        description="Match records by task, variant, data and device; flag quality drops beyond each task's noise, "
        "throughput drops beyond --max-slowdown, and records that went missing. Exit 1 on any of them.",
    )
    cmp.add_argument("old", type=Path, help="results of the last good run (JSONL)")
    cmp.add_argument("new", type=Path, help="results of this run (JSONL)")
    cmp.add_argument(
        "--max-slowdown",
        type=float,
        default=DEFAULT_MAX_SLOWDOWN,
        help="a throughput drop beyond this fraction is a regression (default %(default)s)",
    )
    cmp.add_argument(
        "--noise", nargs="*", default=[], metavar="TASK=VALUE", help="override a task's quality noise"
    )
    cmp.add_argument("--out", type=Path, default=None, help="also write the Markdown summary here")
    cmp.set_defaults(func=_compare)

    sub.add_parser("list", help="list the registered tasks").set_defaults(func=_list)

    cal = sub.add_parser("calibrate", help="measure this device's GEMM peak (fp32, bf16)")
    common(cal)
    cal.set_defaults(func=_calibrate)

    sub.add_parser(
        "data", help="data sources: `data list`, `data fetch NAME|all` (see `data --help`)", add_help=False
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["data"]:
        from benchmarks.data.cli import main as data_main

        return data_main(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
