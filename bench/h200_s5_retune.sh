#!/usr/bin/env bash
# One device call (session 5): re-tune the H200 table's rows at M = 16, 64, 256 with the wider
# candidate sets (the other rows are kept: the shipped table is the starting point and rows merge by M),
# then the side-by-side GEMM benchmark and the kernel GPU tests (every row's accuracy) on the result.
# Everything lands in $OUT/s5-retune.tar plus the table and the bench summary.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s5_retune.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
mkdir -p "$W/tables"
cp "src/rocm_fp8/configs/$TABLE" "$W/tables/$TABLE"
stamp "tune $TABLE at M 16 64 256"
timeout 300 python3 -m rocm_fp8.tune --table-shapes "src/rocm_fp8/configs/$TABLE" --m 16 --m 64 --m 256 \
    --time-budget 0 --speed-output "$W/speed-nvidia_h200.json" --output "$W/tables/$TABLE" \
    --log "$W/tune-log.json" > "$W/tune.txt" 2>&1
echo "tune exit $?"; grep -E "^N=" "$W/tune.txt" | cut -c1-170 | tail -n 30
stamp bench
ROCM_FP8_TABLES="$W/tables" timeout 120 python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "bench exit $?"
stamp "kernel gpu tests"
ROCM_FP8_TABLES="$W/tables" timeout 90 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    --junitxml="$W/gpu-tests-kernels.xml" > "$W/gpu-tests-kernels.txt" 2>&1
echo "tests exit $?"; tail -n 2 "$W/gpu-tests-kernels.txt"
stamp done
mkdir -p "$OUT"
cp "$W/tables/$TABLE" "$OUT/$TABLE"
cp "$W"/gemm-*.md "$OUT/" 2>/dev/null
tar -C "$W" -cf "$OUT/s5-retune.tar" .
grep -E "MET|^\| (M=1|16<=M|M>=1024) " "$W"/gemm-*.md | head -n 12
