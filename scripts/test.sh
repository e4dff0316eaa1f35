#!/usr/bin/env bash
# Set up with the dev extra, lint, and run the test suite (pytest arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
ruff check .
ruff format --check .
# One thread per process: on 2 cores, default threading makes torch/numpy tests several times slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
python -m pytest "$@"
