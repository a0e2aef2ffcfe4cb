#!/usr/bin/env bash
# One device call (session 5, final tree): the GPU suite (peer grids apart), host cost per call, a fresh
# tune of the H200 table at every M over its shapes (our Triton kernel and, where Gluon runs, the sm90
# Gluon kernel; accuracy-gated; every backend timed for the dispatcher's speed evidence), the side-by-side
# GEMM benchmark on that table, the kernel GPU tests on it (every row's accuracy), then the vLLM peer grid
# with whatever time is left. Everything is packed into $OUT/s5-final.tar; the table and summaries beside.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s5_final.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - t0) )); }
pack() { mkdir -p "$OUT"; tar -C "$W" -cf "$OUT/s5-final.tar" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu suite (peer grids apart)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "not peer_contract" -rfE \
    --junitxml="$W/gpu-tests-final-nvidia_h200.xml" > "$W/gpu-tests-final-nvidia_h200.txt" 2>&1
echo "rc $?"; tail -n 4 "$W/gpu-tests-final-nvidia_h200.txt" | cut -c1-300
stamp overhead
timeout 80 python3 bench/overhead.py --out "$W" > "$W/overhead.txt" 2>&1
echo "rc $?"
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
mkdir -p "$W/tables"; cp "src/rocm_fp8/configs/$TABLE" "$W/tables/$TABLE"
t=$(( $(left) - 150 )); [ "$t" -gt 240 ] && t=240
stamp "tune $TABLE, every M (limit ${t}s)"
timeout "$t" python3 -m rocm_fp8.tune --table-shapes "src/rocm_fp8/configs/$TABLE" --time-budget 0 \
    --speed-output "$W/speed-nvidia_h200.json" --output "$W/tables/$TABLE" --log "$W/tune-log.json" \
    > "$W/tune.txt" 2>&1
echo "tune rc $?"; grep -cE "^N=" "$W/tune.txt"
stamp "gemm bench"
ROCM_FP8_TABLES="$W/tables" timeout 90 python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "rc $?"
stamp "kernel gpu tests on the new table"
ROCM_FP8_TABLES="$W/tables" timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    -rfE --junitxml="$W/gpu-tests-kernels-nvidia_h200.xml" > "$W/gpu-tests-kernels.txt" 2>&1
echo "rc $?"; tail -n 1 "$W/gpu-tests-kernels.txt"
t=$(( $(left) - 10 ))
if [ "$t" -gt 30 ]; then
    stamp "peer grid: vllm (limit ${t}s)"
    ROCM_FP8_RESULTS_DIR="$W" timeout "$t" python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
        -k vllm -rfE > "$W/peer-contract-vllm-final-nvidia_h200.txt" 2>&1
    echo "rc $?"; tail -n 1 "$W/peer-contract-vllm-final-nvidia_h200.txt" | cut -c1-300
fi
stamp done
mkdir -p "$OUT"; cp "$W/tables/$TABLE" "$OUT/$TABLE"; cp "$W"/overhead-*.md "$W"/gemm-nvidia_h200.md "$OUT/" 2>/dev/null
grep -E "<=|/ bare" "$W"/overhead-*.md | cut -c1-140
grep -E "MET|^\| (M=1|16<=M|M>=1024) " "$W"/gemm-nvidia_h200.md | head -n 12
