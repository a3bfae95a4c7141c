#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
status=0
.venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests" >&2
fi
exit "$status"
