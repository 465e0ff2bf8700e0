#!/usr/bin/env bash
# Everything this project checks on a CUDA GPU, in one run of about 7 minutes (each part has its own
# time limit, and a part that fails does not stop the next):
#   1. the real-GPU tests of tests/test_cuda_kernels.py;
#   2. Pythia-70M on WikiText-2, dense and local, on the GPU (scripts/pythia70m.py -> results/pythia70m/);
#   3. bench cuda: the Numba CUDA kernels against SDPA and compiled FlexAttention (-> results/cuda/).
# Usage: bash scripts/gpu_checks.sh [LOGDIR]   (the tests' log goes to LOGDIR, default results/tmp)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
LOG=${1:-results/tmp}
mkdir -p "$LOG"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
$PY -c "import torch, numba; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'numba', numba.__version__)"
echo "== 1. GPU tests"
timeout 100 $PY -m pytest tests/test_cuda_kernels.py -k "gpu or real_cuda_target" -q -rs -p no:cacheprovider \
  >"$LOG/gpu_tests.log" 2>&1; tail -25 "$LOG/gpu_tests.log"
echo "== 2. Pythia-70M"
timeout 230 $PY scripts/pythia70m.py --budget-s 100 ${PYTHIA_ARGS:-} 2>&1 | tail -20
echo "== 3. bench cuda"
timeout 130 $PY -m sparse_core bench cuda --n 4096 16384 --density-n 16384 --fractions 8 --rounds 5 2>&1 | tail -8
ls -la results/pythia70m results/cuda 2>/dev/null
