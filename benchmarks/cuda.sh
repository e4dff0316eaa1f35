#!/usr/bin/env bash
# The benchmarks' GPU rows in one run, on a CUDA machine, from the repository root:
#
#   bash benchmarks/cuda.sh [AGENT.zip TOKENS.npy]
#
# merges cuda rows (float32 and bfloat16) into results/estimator_speed.md and .csv, writes
# results/occupancy_speed_cuda.md and .csv and, given a trained voc-<tok> agent and a token array of
# its data, results/bf16_check_cuda.md. A failing step is reported and the others still run; the
# exit status says whether all of them passed. PYTHON names the interpreter (default python3),
# RESULTS the folder of the tables (default results; its estimator_speed.csv is merged into).
set -uo pipefail
export PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
out=${RESULTS:-results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
"$py" -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
failed=0
echo "== tests of the CUDA paths"
PYTHONSAFEPATH=1 "$py" -m pytest -q -p no:cacheprovider tests/test_occupancy.py -k cuda || failed=1  # the installed voc_rl
step() {
    echo "== $*"
    local start=$SECONDS
    "$py" "$@" --out-dir "$out" || { failed=1; echo "FAILED: $*"; }
    echo "== $((SECONDS - start)) s"
}
for dtype in float32 bfloat16; do
    step benchmarks/estimator_speed.py --device cuda --dtype "$dtype" --sizes small --chunks
    step benchmarks/estimator_speed.py --device cuda --dtype "$dtype" --sizes tiny base
done
step benchmarks/occupancy_speed.py --device cuda --threads 1
if [ $# -ge 2 ]; then
    step benchmarks/bf16_check.py --device cuda --agent "$1" --tokens "$2"
fi
exit $failed
