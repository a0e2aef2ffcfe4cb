#!/usr/bin/env bash
# One device call for bf16 input in one launch in eager mode (issue 11): the GPU tests of the GEMM
# that quantizes its activation in its prologue (every M of the small bucket, table and explicit
# configs; eager prologue vs captured quant + GEMM vs torch.compile, same bits), then the lean-path
# tests it must not break, then bench/overhead.py (host: eager path; GPU column: captured path; a
# row for the prologue GEMM alone). Under 3 minutes; every step has a time limit; no network.
# Usage (H200, repo root): OUT=/some/dir bash bench/h200_prologue_session.sh
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-out}
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "== $1 ($(( $(date +%s) - t0 ))s)"; }
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__,
torch.cuda.get_device_name())"
stamp "GPU tests: prologue GEMM (bits, NaN, eager vs captured vs compiled), then the fast-path capture/compile tests"
# SIGINT first: pytest still writes the junit report of the tests that ran
timeout -s INT -k 10 90 python3 -m pytest -q -p no:cacheprovider -rfE --junitxml="$OUT/gpu-tests-prologue.xml" \
    tests/gpu/test_gpu_prologue.py tests/gpu/test_gpu_fast_path.py \
    -k "prologue or (captures_and_compiles and bf16-in) or capture_in_a_graph" \
    > "$OUT/gpu-tests-prologue.txt" 2>&1
echo "pytest exit $?"
tail -n 12 "$OUT/gpu-tests-prologue.txt"
stamp "host cost per call (bench/overhead.py)"
timeout 80 python3 bench/overhead.py --out "$OUT" > "$OUT/overhead.txt" 2>&1
echo "overhead.py exit $?"
stamp done
# the short table last: the float-input rows and every target of both shapes
grep -E "^## |^\| (bf16 |op bf16-in (auto|triton) |module bf16-in|triton no-op|torch.matmul)|<=" "$OUT"/overhead-*.md \
    || tail -n 40 "$OUT/overhead.txt"
