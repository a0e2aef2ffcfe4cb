#!/usr/bin/env bash
# One device call validating the merged tree on an NVIDIA GPU: every GPU test (kernels and every table
# row's accuracy, the lean launch path, speed evidence, model shapes through auto, the bench suite),
# the peers' block-FP8 GEMM grids on every backend (vLLM's whole grid, a slice of sglang's), the host
# cost per call, and the side-by-side GEMM benchmark with its auto and best-backend columns.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_validation_session.sh
# Everything lands in $OUT/results.tgz (plus the summaries printed last).
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
RES=/tmp/rocm-fp8-results
mkdir -p "$OUT" "$RES"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu tests"
timeout 170 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "not peer_contract" -rfE \
    --junitxml="$RES/gpu-tests.xml" > "$RES/gpu-tests.txt" 2>&1
tail -n 8 "$RES/gpu-tests.txt"
stamp "peer grids: vllm"
ROCM_FP8_RESULTS_DIR="$RES" timeout 80 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
    -k vllm -rfE > "$RES/peer-vllm.txt" 2>&1
tail -n 5 "$RES/peer-vllm.txt"
stamp "peer grids: sglang, M in 1 7 83"
ROCM_FP8_RESULTS_DIR="$RES" timeout 60 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
    -k "sglang and (M1- or M7- or M83-)" -rfE > "$RES/peer-sglang.txt" 2>&1
tail -n 5 "$RES/peer-sglang.txt"
stamp overhead
timeout 60 python3 bench/overhead.py --out "$RES" 2>&1 | tail -n 30
stamp bench
timeout 80 python3 bench/gemm.py --out "$RES" 2>&1 | tail -n 25
stamp done
tar czf "$OUT/results.tgz" -C "$RES" .
