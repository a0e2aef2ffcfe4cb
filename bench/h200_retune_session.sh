#!/usr/bin/env bash
# One device call: re-tune this GPU's table over the H100 table's shapes (cuBLASLt now timed with the
# activation-scale layout the backend really feeds it), then the side-by-side benchmark and the kernel GPU
# tests (every row's accuracy) against the fresh table.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_retune_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
stamp "tune $TABLE"
timeout 130 python3 -m rocm_fp8.tune --table-shapes nvidia_h100_80gb_hbm3 --time-budget 0 --speed-output "$OUT/speed-nvidia_h200.json" \
    --output "$OUT/$TABLE" --log "$OUT/tune-log.json" > "$OUT/tune.txt" 2>&1
echo "tune exit $?"; tail -n 3 "$OUT/tune.txt"
stamp bench
ROCM_FP8_TABLES="$OUT" timeout 60 python3 bench/gemm.py --out "$OUT" 2>&1 | tail -n 16
stamp "kernel gpu tests"
ROCM_FP8_TABLES="$OUT" timeout 45 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    --junitxml="$OUT/gpu-tests-kernels.xml" 2>&1 | tail -n 3
stamp done
