#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian machine (root; no GPU needed):
#   Python env (ci/bootstrap.sh), the AMD cross-compile inputs (ci/setup-amd-cross.sh), a real Docker
#   engine (ci/setup-docker.sh), headless Chromium for the report test (ci/setup-chromium.sh), the
#   linters (ci/lint.sh: zizmor, hadolint), then pytest over tests/. GPU tests skip without a GPU.
# Extra arguments go to pytest, e.g. `bash ci/run-tests.sh -k policy`.
#
# Docker: a daemon this script starts is stopped when it exits; one that was already running (e.g. left
# up by ci/build-images.sh) is left running, so the README's next commands still find it.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/bootstrap.sh
bash ci/setup-amd-cross.sh   # pinned aiter files + a Triton 3.6 venv for tests/test_amd_cross_compile.py
export ROCM_FP8_DOCKER_OWNER="run-tests-$$"
bash ci/setup-docker.sh start
trap 'bash ci/setup-docker.sh stop' EXIT
bash ci/setup-chromium.sh

lint_status=0
bash ci/lint.sh || lint_status=1

mkdir -p reports && rm -f reports/junit*.xml
set +e
# the slowest Docker tests print nothing for a minute or more: the heartbeat says they are alive
python3 ci/heartbeat.py --label pytest -- .venv/bin/python -m pytest tests -ra --junitxml=reports/junit.xml "$@"
status=$?
set -e

# --- serving-stack plugins: tests/integrations again inside the sglang / vLLM venvs (ci/setup-stacks.sh) ---
# (ROCM_FP8_STACKS=0 skips this step in a local run; CI never sets it)
stacks_status=0
stacks=(vllm sglang)
if [ "${ROCM_FP8_STACKS:-1}" = "0" ]; then stacks=(); echo "[run-tests] ROCM_FP8_STACKS=0: stack tests skipped"; fi
[ ${#stacks[@]} -eq 0 ] || bash ci/setup-stacks.sh "${stacks[@]}" || stacks_status=1
for stack in "${stacks[@]}"; do
    [ "$stacks_status" -eq 0 ] || break
    echo "[run-tests] tests/integrations in the $stack venv"
    ROCM_FP8_STACK=$stack "${ROCM_FP8_STACKS_DIR:-$HOME/.cache/rocm-fp8/stacks}/$stack/bin/python" -m pytest tests/integrations -ra -p no:cacheprovider \
        -W ignore::UserWarning --junitxml="reports/junit-$stack.xml" || stacks_status=1
done
if [ "$stacks_status" -ne 0 ] && [ "$status" -eq 0 ]; then status=1; fi
# --- end serving-stack plugins ---
# one closing line over every pytest run above (main venv and stack venvs), from their JUnit XML
python3 - reports/junit*.xml <<'PY' || true
import sys, xml.etree.ElementTree as ET
tot = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
for path in sys.argv[1:]:
    root = ET.parse(path).getroot()
    for suite in ([root] if root.tag == "testsuite" else root.iter("testsuite")):
        for key in tot:
            tot[key] += int(suite.get(key, 0))
failed = tot["failures"] + tot["errors"]
print(f"total: {tot['tests'] - failed - tot['skipped']} passed, {failed} failed, {tot['skipped']} skipped")
PY
if [ "$status" -eq 5 ]; then
    echo "[run-tests] pytest collected no tests: that is a failure here" >&2
    exit 1
fi
if [ "$lint_status" -ne 0 ] && [ "$status" -eq 0 ]; then
    echo "[run-tests] the tests passed but ci/lint.sh failed (see its output above)" >&2
    exit 1
fi
exit "$status"
