#!/usr/bin/env bash
# One-time (and idempotent) set-up on a fresh clone: virtual environment, pinned install, data fetch.
# The second run takes seconds: the install is skipped while the lock and pyprojects are unchanged,
# and the data fetch skips every source that is already in the cache.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}
if [ ! -x "$VENV/bin/python" ]; then
  echo "setup: creating $VENV with $($PYTHON --version)" >&2
  "$PYTHON" -m venv "$VENV"
fi

stamp="$VENV/.install-stamp"
want=$(cat requirements/*.txt pyproject.toml packages/*/pyproject.toml | sha256sum | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing pinned dependencies (first time: a few minutes)" >&2
  # --no-cache-dir: the CUDA wheels torch pulls in are ~3 GB; a copy in pip's cache would double the disk
  # a fresh CI machine needs (one ran out of space).
  "$VENV/bin/python" -m pip install -q --no-cache-dir --disable-pip-version-check -c requirements/lock.txt \
    -r requirements/dev.txt -e packages/core -e ".[smollm2]" -e packages/geoad -e "packages/puzzle[highs]" -e packages/quadformer -e packages/textscale
  echo "$want" > "$stamp"
fi

"$VENV/bin/effinfer-data" fetch all
