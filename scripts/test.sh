#!/usr/bin/env bash
# The project's test command: .ci/run, tox (tox.ini) and the README all call this; pytest's own
# options live in pyproject.toml ([tool.pytest.ini_options]); extra arguments go to pytest.
# Under tox, which made the environment, it runs pytest there; otherwise it makes .venv ready
# first (scripts/bootstrap.sh; as root also Docker, QEMU and the device images) and runs in it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ -n "${TOX_ENV_NAME:-}" ]; then
    exec python -m pytest "$@"
fi
bash scripts/bootstrap.sh
exec .venv/bin/python -m pytest "$@"
