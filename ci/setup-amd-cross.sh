#!/usr/bin/env bash
# What tests/test_amd_cross_compile.py needs besides the main venv (no GPU, no ROCm):
#   .cache/amd-cross/aiter-<ver>/aiter   the pinned amd-aiter wheel's files (pip install --no-deps --target:
#                                        its Triton kernels and configs; aiter/__init__ is never run)
#   .venv-triton36                       Triton 3.6.0, the generation torch 2.10 pins (the ROCm 7.2 image
#                                        base's torch), with the main venv's packages (torch) behind it
# Idempotent; needs PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[setup-amd-cross] $*"; }
AITER_PIN="${ROCM_FP8_CROSS_AITER:-0.1.7.post2.dev18}"
TRITON_OTHER="${ROCM_FP8_CROSS_TRITON:-3.6.0}"
MAIN_PY="${ROCM_FP8_VENV:-.venv}/bin/python"
AITER_DIR=".cache/amd-cross/aiter-$AITER_PIN"
other_mm="${TRITON_OTHER%.*}"
OTHER_VENV=".venv-triton${other_mm//./}"

if [ ! -f "$AITER_DIR/aiter/ops/triton/gemm_a8w8_blockscale.py" ]; then
    say "installing amd-aiter==$AITER_PIN (no deps) into $AITER_DIR"
    "$MAIN_PY" -m pip install -q --no-deps --target "$AITER_DIR" "amd-aiter==$AITER_PIN"
fi
if ! "$OTHER_VENV/bin/python" -c "import triton, sys; sys.exit(triton.__version__ != '$TRITON_OTHER')" 2>/dev/null; then
    say "creating $OTHER_VENV with triton==$TRITON_OTHER"
    base_py="$("$MAIN_PY" -c 'import sys, os; print(os.path.join(sys.base_prefix, "bin", "python3"))')"
    "$base_py" -m venv "$OTHER_VENV"
    "$OTHER_VENV/bin/python" -m pip install -q "triton==$TRITON_OTHER"
    # torch and the rest come from the main venv, behind this venv's own site-packages (triton first)
    main_site="$("$MAIN_PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    other_site="$("$OTHER_VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    echo "$(cd "$main_site" && pwd)" > "$other_site/zz_rocm_fp8_main_venv.pth"
fi
"$OTHER_VENV/bin/python" -c "import torch, triton; print('[setup-amd-cross] $OTHER_VENV: torch', torch.__version__, '| triton', triton.__version__)"
say "aiter files: $AITER_DIR/aiter"
