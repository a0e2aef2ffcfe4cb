#!/usr/bin/env bash
# One device call: torch-scaled-mm with K padded to a multiple of 512 — its GPU tests, the probe over
# the presets that have K/128 not a multiple of 4, and the benchmark of those shapes. Results in $OUT.
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1 ROCM_FP8_CONFIG=none ROCM_FP8_CACHE=/tmp/rocm-fp8-cache
OUT=${OUT:-out}
mkdir -p "$OUT"
timeout 240 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py -k "scaled_mm or public_op" \
    --junitxml="$OUT/gpu-tests-scaled-mm.xml" 2>&1 | tail -n 6
timeout 240 python3 -m rocm_fp8 probe --backend torch-scaled-mm --backend triton --preset minimax-m2.5-tp4 \
    --preset deepseek-v3-tp8 --timeout 60 --output "$OUT/probe-report.json" 2>"$OUT/probe-log.txt" \
    > "$OUT/probe-table.txt"; cat "$OUT/probe-table.txt"
timeout 150 python3 bench/gemm.py --out "$OUT" --shape 3072,384 --shape 7168,2304 --shape 7168,256 --tag unaligned-k 2>&1 | tail -n 30
