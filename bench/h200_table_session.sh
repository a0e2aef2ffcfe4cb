#!/usr/bin/env bash
# One device call: tune a fresh table for this GPU over the shipped H100 table's shapes and M (the
# accuracy gate of `rocm-fp8 tune` applies), then validate it in the same call: the side-by-side GEMM
# benchmark (both shape sets) and the kernel GPU tests, including every table row's accuracy.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_table_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
SHAPES=$(python3 -c "
import json; d = json.load(open('src/rocm_fp8/configs/nvidia_h100_80gb_hbm3.json'))
print(' '.join(d['shapes']))")
args=""
for s in $SHAPES; do args="$args --n ${s%,*} --k ${s#*,}"; done
stamp "tune $TABLE over: $SHAPES"
timeout ${TUNE_TIMEOUT:-330} python3 -m rocm_fp8.tune $args --output "$OUT/$TABLE" --log "$OUT/tune-log.json" \
    > "$OUT/tune.txt" 2>&1
echo "tune exit $?"
grep -E "^(N=|precompiled|does not|wrote)" "$OUT/tune.txt" | cut -c1-160
stamp bench
ROCM_FP8_CONFIG_DIR="$OUT" timeout 150 python3 bench/gemm.py --out "$OUT" 2>&1 | tail -n 12
ROCM_FP8_CONFIG_DIR="$OUT" timeout 60 python3 bench/gemm.py --out "$OUT" --tag unaligned-k \
    --shape 3072,384 --shape 7168,2304 --shape 7168,256 2>&1 | tail -n 12
stamp "gpu tests"
ROCM_FP8_CONFIG_DIR="$OUT" timeout 100 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests-kernels.xml" 2>&1 | tail -n 6
stamp done
