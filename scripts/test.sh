#!/usr/bin/env bash
# The test command: set-up (idempotent), then the checks CI runs -- lint, formatting, types -- and the whole CPU test
# suite. With arguments it runs only pytest with them (e.g. `bash scripts/test.sh -x -k yardstick`).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
if [ $# -eq 0 ]; then
  echo "test: ruff check, ruff format --check, mypy" >&2
  .venv/bin/ruff check --quiet .
  .venv/bin/ruff format --check --quiet .
  .venv/bin/python -m mypy
fi
exec .venv/bin/python -m pytest "$@"
