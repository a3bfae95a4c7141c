#!/usr/bin/env bash
# Sets up .venv with the test extras and runs the test suite (arguments go to pytest).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
status=0
# Two workers, one test file each at a time (a file's module fixtures stay in one process; the files
# on the session's shared Ray cluster go to one worker together, see docs/testing.md): the long
# tests mostly wait on servers (dagster dev, Ray, Redis, Chromium), so the suite takes about half as
# long on two cores. REFINERY_TEST_WORKERS=0 runs it in one process;
# arguments after it go to pytest (`-n 0` too).
.venv/bin/python -m pytest -n "${REFINERY_TEST_WORKERS:-2}" --dist loadfile --no-loadscope-reorder "$@" || status=$?
if [ "$status" -eq 5 ]; then
  echo "test: pytest collected no tests" >&2
fi
exit "$status"
