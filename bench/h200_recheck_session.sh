#!/usr/bin/env bash
# Re-check on the GPU after fixing what the validation session found: sglang's whole grid (every
# backend, every output dtype) and the compile/graph-capture test of the lean path.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_recheck_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp "compile and capture"
timeout 80 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_fast_path.py -k "captures_and_compiles" -rfE \
    --junitxml="$OUT/gpu-tests-compile.xml" 2>&1 | tail -n 4
stamp "peer grids: sglang, every M"
ROCM_FP8_RESULTS_DIR="$OUT" timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_peer_contract.py \
    -k sglang -rfE > "$OUT/peer-sglang.txt" 2>&1
tail -n 6 "$OUT/peer-sglang.txt"
stamp done
