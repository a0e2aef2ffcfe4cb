#!/usr/bin/env bash
# Host cost per call on the H200 after the torch-scaled-mm lean path (issue 11): the GPU tests of
# torch-scaled-mm and of the padded fused quant, then bench/overhead.py (interleaved paths, the bare
# torch._scaled_mm floor). Under 3 minutes; no network.
# Usage (device machine, repo root): OUT=/some/dir bash bench/h200_overhead_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
stamp "GPU tests: torch-scaled-mm (kernel, fused bf16 path, capture and compile), fused quant (padded too)"
timeout 90 python3 -m pytest -q -p no:cacheprovider -rfE --junitxml="$OUT/gpu-tests-overhead.xml" \
    tests/gpu/test_gpu_fast_path.py tests/gpu/test_gpu_kernels.py -k "scaled_mm or scaled-mm or fused_quant or pad_fp8" \
    > "$OUT/gpu-tests-overhead.txt" 2>&1
tail -n 8 "$OUT/gpu-tests-overhead.txt"
stamp "host cost per call (bench/overhead.py)"
timeout 85 python3 bench/overhead.py --out "$OUT" > "$OUT/overhead.txt" 2>&1
echo "overhead.py exit $?"
stamp done
# the short table last: every target row of both shapes
grep -E "^## |^\| (target|op |module |.*<=|.*bare)" "$OUT"/overhead-*.md | grep -E "## |<=|/ bare" || tail -n 40 "$OUT/overhead.txt"
