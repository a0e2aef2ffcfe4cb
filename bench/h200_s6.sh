#!/usr/bin/env bash
# One device call (session 6): the GPU suite (peer grids apart; the fma kernel's tests among them), a re-tune of the H200 table's M = 1 and M = 16
# rows with the fma candidates and the eager pick, host cost per call and the side-by-side GEMM benchmark
# on that table, then the kernel GPU tests on it (every row's accuracy). Packed into $OUT/s6.tar; the
# table and the summaries beside it.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s6.sh
# (SUITE: the GPU tests to run, default tests/gpu; MS: the M to tune, default "1 16")
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
pack() { mkdir -p "$OUT"; tar -C "$W" -cf "$OUT/s6.tar" .; }
trap pack EXIT
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "gpu suite (peer grids apart)"
timeout ${T_TESTS:-170} python3 -m pytest -q -p no:cacheprovider ${SUITE:-tests/gpu} -k "not peer_contract" -rfE \
    --junitxml="$W/gpu-tests-s6-nvidia_h200.xml" > "$W/gpu-tests-s6-nvidia_h200.txt" 2>&1
echo "rc $?"; grep -E "^(FAILED|ERROR)" "$W/gpu-tests-s6-nvidia_h200.txt" | cut -c1-300 | head; tail -n 1 "$W/gpu-tests-s6-nvidia_h200.txt"
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
mkdir -p "$W/tables"; cp "src/rocm_fp8/configs/$TABLE" "$W/tables/$TABLE"
MS=${MS:-"1 16"}
stamp "tune $TABLE at M = $MS"
timeout ${T_TUNE:-220} python3 -m rocm_fp8.tune --table-shapes "src/rocm_fp8/configs/$TABLE" $(printf -- "--m %s " $MS) \
    --time-budget 0 --speed-output "$W/speed-small-m-nvidia_h200.json" --output "$W/tables/$TABLE" \
    --log "$W/tune-log-small-m.json" > "$W/tune-small-m.txt" 2>&1
echo "tune rc $?"; grep -E "^N=" "$W/tune-small-m.txt" | cut -c1-200
python3 - "$W/tables/$TABLE" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
for key, rows in t["shapes"].items():
    for r in rows:
        if r["m"] <= 16:
            print(key, r["m"], r["config"].get("kernel"), r.get("triton_us"), "eager:",
                  (r.get("eager") or {}).get("kernel", "-" if not r.get("eager") else "dot"),
                  r.get("eager_us"), r.get("eager_main_us"))
PY
stamp overhead
ROCM_FP8_TABLES="$W/tables" timeout ${T_OVER:-90} python3 bench/overhead.py --out "$W" > "$W/overhead.txt" 2>&1
echo "rc $?"
stamp "gemm bench"
ROCM_FP8_TABLES="$W/tables" timeout ${T_GEMM:-90} python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "rc $?"
stamp "kernel gpu tests on the new table"
ROCM_FP8_TABLES="$W/tables" timeout ${T_KT:-70} python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    -rfE --junitxml="$W/gpu-tests-kernels-nvidia_h200.xml" > "$W/gpu-tests-kernels.txt" 2>&1
echo "rc $?"; tail -n 1 "$W/gpu-tests-kernels.txt"
stamp done
mkdir -p "$OUT"; cp "$W/tables/$TABLE" "$OUT/$TABLE"; cp "$W"/overhead-*.md "$W"/gemm-nvidia_h200.md "$OUT/" 2>/dev/null
grep -E "<=|/ bare|fma|bf16-in auto|fp8-in auto" "$W"/overhead-*.md | cut -c1-140
grep -E "MET|^\| (M=1|16<=M|M>=1024) " "$W"/gemm-nvidia_h200.md | head -n 12
