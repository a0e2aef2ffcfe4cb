#!/usr/bin/env bash
# One device call for the Gluon sm90 kernels (issue 16), v4: environment, compile+run each config of
# the bench's default set in a child with a time limit, the GPU tests of v4 (ws2 lag: the accuracy
# gate up to K = 16384, the K-tail cases, a gluon_ws2_lag table row through the triton backend), then
# correctness against float64 and a timing table of cuBLASLt, our Triton table, ws2 256 s3 (v2/v3
# baseline), ws2 256 s4 v3, ws2 128 s4 (lag's twin) and ws2 128 s4/s5 lag on the cells issue 16
# still misses (long K and ragged N: (7168,16384), (2112,7168), (4096,7168), (7168,2048), M = 4096 /
# 16384 / 1024). Target < 150 s; every step has a time limit. Writes 5 files under $OUT:
# gluon-smoke.json, gpu-tests-gluon.xml, gluon-sm90.txt (the full log of the check + bench),
# gluon-sm90-<device>.json/.md.
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
timeout 45 python3 bench/gluon_sm90.py --out "$OUT" --smoke-only 2>&1 | tail -n 12
stamp "gpu tests (gluon v4: ws2 lag)"
timeout 50 python3 -m pytest -q -p no:cacheprovider tests/gpu/test_gpu_gluon.py -k "lag and not ws_lag" \
    --junitxml="$OUT/gpu-tests-gluon.xml" 2>&1 | tail -n 12
stamp "check + bench"
timeout ${BENCH_TIMEOUT:-50} python3 bench/gluon_sm90.py --out "$OUT" --from-smoke "$OUT/gluon-smoke.json" \
    --shapes "7168,16384 2112,7168 4096,7168 7168,2048" --budget ${BUDGET:-20} 2>&1 \
    | tee "$OUT/gluon-sm90.txt" | grep -v "^check .* PASS$" | tail -n 50
stamp done
