#!/usr/bin/env bash
# One device call validating the final tree on a GPU: the side-by-side GEMM benchmark with the
# shipped table, every GPU test (kernels, tuned-row accuracy, model shapes through `auto`, the
# matrix's bench suite), the probe over the model presets, and the call overhead.
# Usage (device machine, repo root): OUT=/some/dir bash bench/final_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp bench
timeout ${BENCH_TIMEOUT:-200} python3 bench/gemm.py --out "$OUT" 2>&1 | tail -n 12
stamp "bench, shapes with K/128 not a multiple of 4"
timeout ${BENCH_TIMEOUT:-200} python3 bench/gemm.py --out "$OUT" --tag unaligned-k \
    --shape 3072,384 --shape 7168,2304 --shape 7168,256 2>&1 | tail -n 12
stamp "gpu tests"
timeout ${TEST_TIMEOUT:-200} python3 -m pytest -q -p no:cacheprovider tests/gpu -rs \
    --junitxml="$OUT/gpu-tests.xml" > /tmp/gpu-tests.txt 2>&1
tail -n 15 /tmp/gpu-tests.txt
stamp overhead
mkdir -p /tmp/ovh
timeout 120 python3 bench/overhead.py --out /tmp/ovh 2>&1 | tail -n 12
cp /tmp/ovh/overhead-*.json "$OUT/" 2>/dev/null
stamp probe
export ROCM_FP8_CONFIG=none ROCM_FP8_CACHE=/tmp/rocm-fp8-cache
timeout ${PROBE_TIMEOUT:-150} python3 -m rocm_fp8 probe --preset minimax-m2.5-tp4 --preset deepseek-v3-tp8 \
    --timeout 60 --build-timeout 300 --output "$OUT/probe-report.json" 2>/tmp/probe-log.txt > "$OUT/probe-table.txt"
for nk in "2048 3072" "3072 384" "7168 2304"; do
    set -- $nk
    for m in 1 16 4096; do python3 -m rocm_fp8 explain --n $1 --k $2 --m $m | sed -n '1p;3,5p'; done
done >> "$OUT/probe-table.txt" 2>&1
tail -n 60 "$OUT/probe-table.txt"
stamp done
