"""The one way every package's command line ends: a user's mistake is one ``error:`` line and exit status 2."""

from __future__ import annotations

import argparse
import sys

EXIT_USAGE = 2


def run_command(args: argparse.Namespace, user_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Call ``args.func(args)``; bad input -- ``ValueError`` (config, data, budgets), ``FileNotFoundError`` and the
    package's own ``user_errors`` -- prints what was wrong and what to do, and returns ``EXIT_USAGE``."""
    errors: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, *user_errors)
    try:
        return args.func(args)
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
