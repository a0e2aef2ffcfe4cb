#!/usr/bin/env bash
# Python environment for the tests and the deploy tasks: a venv in .venv with torch (CPU is enough
# here), triton, and rocm-fp8 installed editable with its deploy and test extras.
#
# torch comes from /opt/wheels when that folder has it (no download), else from PyPI's CPU index.
# It is installed before rocm-fp8 so that nothing resolves "torch" to a multi-GB CUDA wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[bootstrap] $*"; }
# pip -q keeps the log short; the heartbeat prints a line every 30 s of silence so a long download
# does not look like a hang.
quiet_pip() { python ci/heartbeat.py --label "bootstrap: pip" -- python -m pip "$@"; }
PY="${PYTHON:-python3}"
VENV="${ROCM_FP8_VENV:-.venv}"
TORCH_VERSION="${ROCM_FP8_TORCH:-2.13.0}"

if [ ! -x "$VENV/bin/python" ]; then
    say "creating $VENV with $($PY --version 2>&1)"
    "$PY" -m venv "$VENV"
fi
# shellcheck disable=SC1091
. "$VENV/bin/activate"
python -m pip install -q --upgrade pip

if ! python -c "import torch" 2>/dev/null; then
    if ls /opt/wheels/torch-"$TORCH_VERSION"* >/dev/null 2>&1; then
        say "installing torch $TORCH_VERSION from /opt/wheels"
        quiet_pip install -q --find-links /opt/wheels "torch==$TORCH_VERSION"
    else
        say "installing torch (CPU build) from download.pytorch.org"
        quiet_pip install -q torch --index-url https://download.pytorch.org/whl/cpu
    fi
fi
say "installing rocm-fp8 (editable) with the deploy, test and triton extras"
quiet_pip install -q -e ".[deploy,test,triton]"
python -c "import torch, triton, rocm_fp8; print('[bootstrap] torch', torch.__version__, '| triton', triton.__version__, '| rocm_fp8', rocm_fp8.__version__)"
say "ready: activate it with \`. $VENV/bin/activate\` for invoke and rocm-fp8"
