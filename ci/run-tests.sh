#!/usr/bin/env bash
# The whole test suite, as CI runs it, on a fresh Debian machine (root; no GPU needed):
#   Python env (ci/bootstrap.sh), the AMD cross-compile inputs (ci/setup-amd-cross.sh), a real Docker engine (ci/setup-docker.sh), headless Chromium for the
#   report test (ci/setup-chromium.sh), then pytest over tests/. GPU tests skip without a GPU.
# Extra arguments go to pytest, e.g. `bash ci/run-tests.sh -k policy`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/bootstrap.sh
bash ci/setup-amd-cross.sh   # pinned aiter files + a Triton 3.6 venv for tests/test_amd_cross_compile.py
bash ci/setup-docker.sh start
trap 'bash ci/setup-docker.sh stop' EXIT
if [ -f ci/setup-chromium.sh ]; then
    bash ci/setup-chromium.sh
fi

mkdir -p reports
set +e
.venv/bin/python -m pytest tests -ra --junitxml=reports/junit.xml "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
    echo "[run-tests] pytest collected no tests: that is a failure here" >&2
    exit 1
fi
exit "$status"
