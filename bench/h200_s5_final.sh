#!/usr/bin/env bash
# One device call (session 5, final tree): the whole GPU suite but the peer grids, the vLLM peer grid
# (every backend), host cost per call, the side-by-side GEMM benchmark (a second run on the shipped
# H200 table); everything packed into $OUT/s5-final.tar; summaries beside it.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s5_final.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu suite (peer grids apart)"
timeout 200 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "not peer_contract" -rfE \
    --junitxml="$W/gpu-tests-final-nvidia_h200.xml" > "$W/gpu-tests-final-nvidia_h200.txt" 2>&1
echo "rc $?"; tail -n 4 "$W/gpu-tests-final-nvidia_h200.txt" | cut -c1-300
stamp "peer grid: vllm"
ROCM_FP8_RESULTS_DIR="$W" timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
    -k vllm -rfE > "$W/peer-contract-vllm-final-nvidia_h200.txt" 2>&1
echo "rc $?"; tail -n 2 "$W/peer-contract-vllm-final-nvidia_h200.txt" | cut -c1-300
stamp overhead
timeout 100 python3 bench/overhead.py --out "$W" > "$W/overhead.txt" 2>&1
echo "rc $?"
stamp "gemm bench"
timeout 90 python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "rc $?"
stamp done
mkdir -p "$OUT"
tar -C "$W" -cf "$OUT/s5-final.tar" .
cp "$W"/overhead-*.md "$W"/gemm-nvidia_h200.md "$OUT/" 2>/dev/null
grep -E "<=|/ bare" "$W"/overhead-*.md | cut -c1-160
grep -E "MET|^\| (M=1|16<=M|M>=1024) " "$W"/gemm-nvidia_h200.md | head -n 12
