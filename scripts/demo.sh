#!/usr/bin/env bash
# The main job: the example model repository (examples/digits) through the gates on its default
# devices, printing the verdict table and writing the reports to reports/.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/bootstrap.sh || exit $?
mkdir -p reports
cd examples/digits
../../.venv/bin/pytest -p no:cacheprovider \
    --harness-json ../../reports/digits.json --junitxml ../../reports/digits-junit.xml "$@"
status=$?
echo "demo: reports in $(cd ../../reports && pwd) (exit status $status: non-zero means a gate failed)"
exit $status
