#!/usr/bin/env bash
# Set up voc_rl: create .venv (or use the virtual environment already active) and install the
# package in editable mode. Usage: scripts/setup.sh [EXTRAS], e.g. scripts/setup.sh dev.
# Idempotent: a second run installs nothing new. Torch: if the environment already has one (a GPU
# user's CUDA build, say) it is kept; otherwise torch 2.13.0 is installed first, which on a CPU
# machine is the CPU build, so the project's `torch>=2.8` pulls no CUDA packages.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"

if [ -n "${VIRTUAL_ENV:-}" ]; then
  venv="$VIRTUAL_ENV"
else
  venv=.venv
  [ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"

quiet_pip() {  # pip, minus this machine's notices about unused local index folders
  python -m pip "$@" 2> >(grep -v '^WARNING: Location' >&2)
}
if ! python -c "import torch" 2>/dev/null; then
  quiet_pip install -q "torch==2.13.0"
fi
quiet_pip install -q -e ".${extras:+[$extras]}"
echo "voc_rl installed in $venv ($(python -c 'import torch; print("torch", torch.__version__)'))"
