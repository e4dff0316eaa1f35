#!/usr/bin/env bash
# Set up with the dev extra, lint, and run the test suite (pytest arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
ruff check .
ruff format --check .
# The documentation site (mkdocs.yml): a broken link, anchor or API symbol fails; quiet unless it does.
# (mkdocs -q would drop the warnings that --strict counts, so the output is kept and shown on failure.)
if ! docs_log="$(NO_MKDOCS_2_WARNING=1 mkdocs build --strict 2>&1)"; then
  echo "$docs_log" >&2
  exit 1
fi
# One thread per process: on 2 cores, default threading makes torch/numpy tests several times slower.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
python -m pytest -m "" "$@"  # every test: the slow tier too (pytest alone runs the fast one)
