#!/usr/bin/env bash
# One device call (session 6, final tree): the GPU suite (peer grids apart) on the shipped table, host
# cost per call, the side-by-side GEMM benchmark, then the vLLM peer grid with the time left.
# Packed into $OUT/s6-final.tar; the summaries beside it.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s6_final.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
left() { echo $(( ${BUDGET:-540} - ($(date +%s) - t0) )); }
pack() { mkdir -p "$OUT"; tar -C "$W" -cf "$OUT/s6-final.tar" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu suite (peer grids apart)"
timeout 180 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "not peer_contract" -rfE \
    --junitxml="$W/gpu-tests-final-nvidia_h200.xml" > "$W/gpu-tests-final-nvidia_h200.txt" 2>&1
echo "rc $?"; grep -E "^(FAILED|ERROR)" "$W/gpu-tests-final-nvidia_h200.txt" | cut -c1-300 | head; tail -n 1 "$W/gpu-tests-final-nvidia_h200.txt"
stamp overhead
timeout 90 python3 bench/overhead.py --out "$W" > "$W/overhead.txt" 2>&1
echo "rc $?"
stamp "gemm bench"
timeout 90 python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "rc $?"
t=$(( $(left) - 10 ))
if [ "$t" -gt 30 ]; then
    stamp "peer grid: vllm (limit ${t}s)"
    ROCM_FP8_RESULTS_DIR="$W" timeout "$t" python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
        -k vllm -rfE > "$W/peer-contract-vllm-final-nvidia_h200.txt" 2>&1
    echo "rc $?"; tail -n 1 "$W/peer-contract-vllm-final-nvidia_h200.txt" | cut -c1-300
fi
stamp done
mkdir -p "$OUT"; cp "$W"/overhead-*.md "$W"/gemm-nvidia_h200.md "$OUT/" 2>/dev/null
grep -E "<=|/ bare|fma|bf16-in auto|fp8-in auto" "$W"/overhead-*.md | cut -c1-140
grep -E "MET|^\| (M=1|16<=M|M>=1024) " "$W"/gemm-nvidia_h200.md | head -n 12
