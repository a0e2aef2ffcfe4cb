#!/usr/bin/env bash
# One device call for the Gluon sm90 kernels (issue 16): environment, compile+run every config,
# correctness against float64 (accuracy gate), the GPU tests of the Gluon kernels (ws2 bound from a
# table row through the triton backend included), then a timing table of cuBLASLt, our Triton table,
# v2 (ws2 BN 128 x 4, BN 256 x 3) and v3 (ws2 BN 256 x 4 with one output buffer per consumer, BN 192)
# on the same cells. Target < 4 minutes; every step has a time limit (a config that deadlocks is dropped by
# the smoke step, run per config in child processes). Writes 5 files under $OUT: gluon-smoke.json,
# gpu-tests-gluon.xml, gluon-sm90.txt (the full log of the check + bench), gluon-sm90-<device>.json/.md.
# Usage (H200, repo root, no network): OUT=/some/dir bash bench/h200_gluon_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
stamp env
nvidia-smi --query-gpu=name,driver_version,clocks.sm,temperature.gpu --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)"
stamp "smoke: each config compiled, run and checked in a child with a time limit"
timeout 60 python3 bench/gluon_sm90.py --out "$OUT" --smoke-only 2>&1 | tail -n 30
stamp "gpu tests (gluon)"
timeout 110 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_gluon.py \
    --junitxml="$OUT/gpu-tests-gluon.xml" 2>&1 | tail -n 12
stamp "check + bench"
timeout ${BENCH_TIMEOUT:-75} python3 bench/gluon_sm90.py --out "$OUT" --from-smoke "$OUT/gluon-smoke.json" \
    --budget ${BUDGET:-35} 2>&1 \
    | tee "$OUT/gluon-sm90.txt" | grep -v "^check .* PASS$" | tail -n 80
stamp done
