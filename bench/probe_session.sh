#!/usr/bin/env bash
# One device call: the probe over the model presets with every backend available here, then
# `rocm-fp8 explain` reading the report from the cache. Everything lands in $OUT.
# Usage (device machine, repo root): OUT=/some/dir bash bench/probe_session.sh
set -u
export PYTHONPATH=src ROCM_FP8_CONFIG=none ROCM_FP8_CACHE="${OUT:-out}/cache"
OUT=${OUT:-out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version --format=csv
python3 -m rocm_fp8 info
timeout ${PROBE_TIMEOUT:-480} python3 -m rocm_fp8 probe --preset minimax-m2.5-tp4 --preset deepseek-v3-tp8 \
    --timeout 60 --build-timeout 300 --output "$OUT/probe-report.json" 2>"$OUT/probe-log.txt" | tee "$OUT/probe-table.txt"
tail -n 5 "$OUT/probe-log.txt"
for m in 16 4096; do python3 -m rocm_fp8 explain --n 2048 --k 3072 --m $m; done | tee "$OUT/explain.txt"
