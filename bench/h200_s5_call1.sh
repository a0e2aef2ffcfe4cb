#!/usr/bin/env bash
# One device call (session 5, first): the merged tree's GPU tests for the one-launch split-K, the lean
# torch-scaled-mm path and the Gluon sm90 kernel; the Gluon smoke/check/bench; host cost per call; the
# graph cost of the split-K counters; the M <= 256 bench. Each step has its own limit; a failing step
# does not stop the others. Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s5_call1.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu tests: split-K, fast path, kernels"
timeout 150 python3 -m pytest -q -p no:cacheprovider -rfE -x \
    tests/gpu/test_gpu_splitk.py tests/gpu/test_gpu_fast_path.py tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests-splitk.xml" > "$OUT/gpu-tests-splitk.txt" 2>&1
echo "rc $?"; tail -n 6 "$OUT/gpu-tests-splitk.txt" | cut -c1-300
stamp "gluon smoke"
timeout 150 python3 bench/gluon_sm90.py --out "$OUT" --smoke-only > "$OUT/gluon-smoke.txt" 2>&1
echo "rc $?"; tail -n 14 "$OUT/gluon-smoke.txt" | cut -c1-300
stamp overhead
timeout 80 python3 bench/overhead.py --out "$OUT" > "$OUT/overhead.txt" 2>&1
echo "rc $?"
stamp "split-K graph cost"
timeout 40 python3 bench/splitk_graph_cost.py --out "$OUT" > "$OUT/splitk-graph-cost.txt" 2>&1
echo "rc $?"; tail -n 6 "$OUT/splitk-graph-cost.txt" | cut -c1-200
stamp "gluon gpu tests"
timeout 70 python3 -m pytest -q -p no:cacheprovider -rfE tests/gpu/test_gpu_gluon.py \
    --junitxml="$OUT/gpu-tests-gluon.xml" > "$OUT/gpu-tests-gluon.txt" 2>&1
echo "rc $?"; tail -n 4 "$OUT/gpu-tests-gluon.txt" | cut -c1-300
if [ -s "$OUT/gluon-smoke.json" ]; then
    stamp "gluon check + bench"
    timeout 100 python3 bench/gluon_sm90.py --out "$OUT" --from-smoke "$OUT/gluon-smoke.json" --budget 40 \
        > "$OUT/gluon-sm90.txt" 2>&1
    echo "rc $?"
fi
left=$(( 575 - ($(date +%s) - t0) ))
stamp "bench M <= 256 (limit ${left}s)"
[ "$left" -gt 30 ] && timeout "$left" python3 bench/gemm.py --out "$OUT" --tag splitk-one-launch \
    --m 1 --m 16 --m 64 --m 256 > "$OUT/gemm-le256.txt" 2>&1
stamp done
grep -E "<=|/ bare" "$OUT"/overhead-*.md 2>/dev/null | head -30
grep -iE "tflops|ratio|variant|geomean" "$OUT/gluon-sm90.txt" 2>/dev/null | tail -n 25
grep -E "MET|geomean|M=1 |16<=M" "$OUT/gemm-le256.txt" 2>/dev/null | tail -n 12
