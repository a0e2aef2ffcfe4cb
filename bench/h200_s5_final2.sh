#!/usr/bin/env bash
# One device call (session 5, last): the Gluon kernel's versions side by side (bench/h200_gluon_session.sh),
# the GPU suite (peer grids apart), then a fresh tune of the H200 table at every M (near-ties re-timed
# interleaved), the side-by-side GEMM benchmark on it and the kernel GPU tests on its rows.
# Everything is packed into $OUT/s5-final2.tar; the table and summaries beside it.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_s5_final2.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
W=$(mktemp -d)
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
left() { echo $(( ${BUDGET:-570} - ($(date +%s) - t0) )); }
pack() { mkdir -p "$OUT"; tar -C "$W" -cf "$OUT/s5-final2.tar" .; }
trap pack EXIT
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
stamp "gluon session"
OUT="$W/gluon" timeout 170 bash bench/h200_gluon_session.sh > "$W/gluon-session.txt" 2>&1
echo "rc $?"; grep -E "geomean|below 0.9" "$W/gluon-session.txt" | tail -n 12 | cut -c1-240
# The v4 (lag) kernel runs first here: if its smoke step dropped it or its GPU tests failed, leave it out
# of this tune (on this machine's copy of the tree only) rather than let a hang eat the tune's time.
if ! python3 - "$W/gluon" <<'PY'
import json, sys, xml.etree.ElementTree as E
d = sys.argv[1]
usable = json.load(open(f"{d}/gluon-smoke.json")).get("usable", [])
r = E.parse(f"{d}/gpu-tests-gluon.xml").getroot()
s = r if r.tag == "testsuite" else r[0]
ok = any("lag" in c for c in usable) and s.get("failures") == "0" and s.get("errors") == "0"
print("lag usable" if ok else f"lag left out of the tune: usable={usable}, failures={s.get('failures')}")
sys.exit(0 if ok else 1)
PY
then
    sed -i '/kernel="gluon_ws2_lag"))/d; /out.append(dict(block_m=128, block_n=128, group_m=8, num_warps=4, num_stages=4, persistent=True,$/d' \
        src/rocm_fp8/tune/candidates.py
    grep -c gluon_ws2_lag src/rocm_fp8/tune/candidates.py
fi
stamp "gpu suite (peer grids apart)"
timeout 150 python3 -m pytest -q -p no:cacheprovider tests/gpu -k "not peer_contract" -rfE \
    --junitxml="$W/gpu-tests-final-nvidia_h200.xml" > "$W/gpu-tests-final-nvidia_h200.txt" 2>&1
echo "rc $?"; tail -n 3 "$W/gpu-tests-final-nvidia_h200.txt" | cut -c1-300
TABLE=$(python3 -c "import torch; from rocm_fp8.kernel_configs import slug; print(slug(torch.cuda.get_device_name()))").json
mkdir -p "$W/tables"; cp "src/rocm_fp8/configs/$TABLE" "$W/tables/$TABLE"
t=$(( $(left) - 60 )); [ "$t" -gt 200 ] && t=200
stamp "tune $TABLE, every M (limit ${t}s)"
timeout "$t" python3 -m rocm_fp8.tune --table-shapes "src/rocm_fp8/configs/$TABLE" --time-budget 0 \
    --speed-output "$W/speed-nvidia_h200.json" --output "$W/tables/$TABLE" --log "$W/tune-log.json" \
    > "$W/tune.txt" 2>&1
echo "tune rc $?"; grep -cE "^N=" "$W/tune.txt"; grep -E "near-tie" "$W/tune.txt" | cut -c1-200 | tail -n 40
stamp "gemm bench"
ROCM_FP8_TABLES="$W/tables" timeout 60 python3 bench/gemm.py --out "$W" > "$W/gemm.txt" 2>&1
echo "rc $?"
stamp "kernel gpu tests on the new table"
ROCM_FP8_TABLES="$W/tables" timeout 40 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_kernels.py \
    -rfE --junitxml="$W/gpu-tests-kernels-nvidia_h200.xml" > "$W/gpu-tests-kernels.txt" 2>&1
echo "rc $?"; tail -n 1 "$W/gpu-tests-kernels.txt"
stamp done
mkdir -p "$OUT"; cp "$W/tables/$TABLE" "$OUT/$TABLE"; cp "$W"/gemm-nvidia_h200.md "$OUT/" 2>/dev/null
cp "$W"/gluon/gluon-sm90-nvidia_h200.md "$OUT/" 2>/dev/null
grep -E "MET|^\| (M=1|16<=M|M>=1024) |^  - " "$W"/gemm-nvidia_h200.md | head -n 14
