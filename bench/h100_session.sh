#!/usr/bin/env bash
# One device call: environment facts, tuning over the model shapes, the side-by-side benchmark with
# the fresh table, the call-overhead benchmark, then the GPU tests. Everything lands in $OUT.
# Usage (on the device machine, repo root): OUT=/some/dir bash bench/h100_session.sh [quick]
set -u
export PYTHONPATH=src
OUT=${OUT:-out}
mkdir -p "$OUT"
QUICK=${1:-}
SHAPES="2048,3072 3072,1536 768,3072 3072,3072 2112,7168 24576,1536 7168,16384 4096,7168 7168,2048"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv
timeout 60 python3 bench/env_probe.py > "$OUT/env.json" 2>&1; tail -c 1500 "$OUT/env.json"
TABLE_NAME=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))")
stamp tune
args=""
for s in $SHAPES; do args="$args --n ${s%,*} --k ${s#*,}"; done
timeout ${TUNE_TIMEOUT:-300} python3 -m rocm_fp8.tune $args ${QUICK:+--quick} --output "$OUT/$TABLE_NAME.json" \
    --log "$OUT/tune-log.json" > "$OUT/tune.txt" 2>&1
grep -E "^(N=|precompiled|does not|precompile|wrote)" "$OUT/tune.txt" | cut -c1-220 | tail -n 75
stamp bench
ROCM_FP8_CONFIG_DIR="$OUT" timeout ${BENCH_TIMEOUT:-150} python3 bench/gemm.py --out "$OUT" 2>&1 | tail -n 40
stamp overhead
ROCM_FP8_CONFIG_DIR="$OUT" timeout 60 python3 bench/overhead.py --out "$OUT" 2>&1 | tail -n 20
stamp tests
ROCM_FP8_CONFIG_DIR="$OUT" timeout ${TEST_TIMEOUT:-120} python3 -m pytest -q -x -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests.xml" 2>&1 | tail -n 25
stamp done
