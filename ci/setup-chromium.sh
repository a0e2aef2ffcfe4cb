#!/usr/bin/env bash
# Headless Chromium for the test-matrix report test (tests/deploy/test_matrix.py renders report.html).
#
#   ci/setup-chromium.sh        install Debian's `chromium` when no chromium binary is on PATH
#
# The test runs it offline, with a fresh profile:
#   chromium --headless [--no-sandbox] --disable-gpu --no-first-run --disable-background-networking \
#            --disable-component-update --disable-sync --user-data-dir=$(mktemp -d) --dump-dom FILE
# (without the background-networking flags it tries to reach the network, which CI has closed).
# As root, Chromium refuses to start with its sandbox ("Running as root without --no-sandbox is not
# supported"), so the test adds --no-sandbox when it runs as root (CI does) and only then: it renders
# our own report file, nothing from the network.  To look at a report by hand as root, add it too.
set -euo pipefail

say() { echo "[setup-chromium] $*"; }

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    say "already installed: $(chromium --version 2>/dev/null || chromium-browser --version)"
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    say "needs root to install chromium (run with sudo)"; exit 1
fi
say "installing chromium from Debian packages"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
say "installed: $(chromium --version)"
say "used headless by tests/deploy/test_matrix.py (as root it needs --no-sandbox, which the test adds)"
