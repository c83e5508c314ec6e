#!/usr/bin/env bash
# The main job: the example model repository (examples/digits) through the gates on its default
# devices, printing the verdict table and writing the reports to reports/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit
bash scripts/bootstrap.sh || exit $?
mkdir -p reports
devices=()
if ! .venv/bin/python -c "import docker; docker.from_env().ping()" 2>/dev/null; then
    echo "demo: no Docker engine here (run as root to set one up): running on the host device only"
    devices=(--device=host)
fi
cd examples/digits || exit
../../.venv/bin/pytest -p no:cacheprovider "${devices[@]}" \
    --harness-json ../../reports/digits.json --junitxml ../../reports/digits-junit.xml \
    --harness-report ../../reports/digits "$@"
status=$?
echo "demo: reports in $(cd ../../reports && pwd) (exit status $status: non-zero means a gate failed)"
exit $status
