#!/usr/bin/env bash
# The main job on a built-in default: set up, then `voc-rl quickstart` (arguments pass through).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
[ -n "${VIRTUAL_ENV:-}" ] || . .venv/bin/activate
voc-rl quickstart "$@"
