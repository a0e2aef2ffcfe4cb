#!/usr/bin/env bash
# One device call for the one-launch split-K (issues 13 and 11): the GPU tests first (the new
# split-K tests, the lean launch path, every shipped table row's accuracy; stop if any fails), then
# what zeroing the counters costs inside a graph, the side-by-side benchmark for M <= 256 (where the
# tables split K), then the call overhead.
# Usage (device machine, repo root, python3 with torch + triton, no network):
#   OUT=/some/dir bash bench/h200_splitk_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu tests: one-launch split-K, lean path, shipped rows"
timeout ${TEST_TIMEOUT:-180} python3 -m pytest -q -p no:cacheprovider -rfE \
    tests/gpu/test_gpu_splitk.py tests/gpu/test_gpu_fast_path.py tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests-splitk.xml" > "$OUT/gpu-tests-splitk.txt" 2>&1
rc=$?
tail -n 15 "$OUT/gpu-tests-splitk.txt"
if [ "$rc" -ne 0 ]; then
    stamp "gpu tests failed (rc $rc): no benchmark"
    exit "$rc"
fi
stamp "split-K counters inside a graph: a fill per call vs one zeroed buffer"
timeout ${COST_TIMEOUT:-60} python3 bench/splitk_graph_cost.py --out "$OUT" 2>&1 | tail -n 12
stamp "bench, M <= 256"
timeout ${BENCH_TIMEOUT:-150} python3 bench/gemm.py --out "$OUT" --tag splitk-one-launch \
    --m 1 --m 16 --m 64 --m 256 2>&1 | tail -n 22
stamp overhead
timeout ${OVERHEAD_TIMEOUT:-60} python3 bench/overhead.py --out "$OUT" 2>&1 | tail -n 20
stamp done
