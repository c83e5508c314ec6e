#!/usr/bin/env bash
# The project's tests: bootstrap (venv, Docker, QEMU, images), then pytest over tests/.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh
exec .venv/bin/pytest tests "$@"
