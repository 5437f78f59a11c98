#!/usr/bin/env bash
# The main job: set-up (idempotent), then the quick benchmark profile of every method on the embedded default data,
# ending with results/report.md and one accuracy-vs-throughput plot per task. Extra arguments go to
# `python -m benchmarks run` (e.g. --profile full, --only geoad, --device cuda).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m benchmarks run --profile quick "$@"
