#!/usr/bin/env bash
# Make this checkout ready: a virtual environment in .venv with harness and its dev tools, and,
# where we are root on Linux, Docker + QEMU + binfmt started (scripts/setup-docker.sh) and the
# device images built (`harness images build`, a cache hit after the first time).
# Sourced by scripts/demo.sh and scripts/test.sh; safe to run again.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -m venv .venv 2>/dev/null; then
        # Debian splits venv out of python3.
        [ "$(id -u)" -eq 0 ] && { apt-get update -qq && apt-get install -y -qq python3-venv; }
        rm -rf .venv
        "$PYTHON" -m venv .venv
    fi
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[dev]"

if [ "$(id -u)" -eq 0 ] && [ "$(uname -s)" = Linux ] && [ "${HARNESS_NO_DOCKER:-0}" != 1 ]; then
    # chromium: the HTML report's browser test; shellcheck: actionlint checks run: scripts;
    # openssh-client: ssh boards (and their tests' keys); postgresql: the PostgreSQL history's
    # tests start a throwaway server from it (conftest.py's `postgresql` fixture).
    # shellcheck source=scripts/lib.sh
    source scripts/lib.sh
    ensure_packages chromium shellcheck openssh-client postgresql
    bash scripts/setup-docker.sh
    .venv/bin/harness images build
    bash scripts/setup-counting.sh   # QEMU instruction-counting plugin (counting mode)
else
    echo "bootstrap: not root (or HARNESS_NO_DOCKER=1): Docker devices are not set up;" \
         "run scripts/setup-docker.sh as root for them" >&2
fi
