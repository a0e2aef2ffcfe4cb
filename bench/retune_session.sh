#!/usr/bin/env bash
# One device call: re-tune the shipped H100 table at the given M (rows of other M are kept), then
# validate the result in the same call: both GEMM benchmarks and the kernel GPU tests (including the
# accuracy check of every table row) against the fresh table.
# Usage (device machine, repo root): OUT=/some/dir bash bench/retune_session.sh 1024 4096 16384
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
cp "src/rocm_fp8/configs/$TABLE" "$OUT/$TABLE"
SHAPES="2048,3072 3072,1536 768,3072 3072,3072 2112,7168 24576,1536 7168,16384 4096,7168 7168,2048 3072,384 7168,2304 7168,256"
args=""
for s in $SHAPES; do args="$args --n ${s%,*} --k ${s#*,}"; done
for m in "$@"; do args="$args --m $m"; done
stamp tune
timeout ${TUNE_TIMEOUT:-300} python3 -m rocm_fp8.tune $args --output "$OUT/$TABLE" --log "$OUT/tune-log.json" \
    > "$OUT/tune.txt" 2>&1
grep -E "^(N=|precompiled|does not)" "$OUT/tune.txt" | cut -c1-200
stamp bench
ROCM_FP8_CONFIG_DIR="$OUT" timeout 200 python3 bench/gemm.py --out "$OUT" 2>&1 | tail -n 12
ROCM_FP8_CONFIG_DIR="$OUT" timeout 120 python3 bench/gemm.py --out "$OUT" --tag unaligned-k \
    --shape 3072,384 --shape 7168,2304 --shape 7168,256 2>&1 | tail -n 12
stamp "gpu tests"
ROCM_FP8_CONFIG_DIR="$OUT" timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests-kernels.xml" 2>&1 | tail -n 6
stamp done
