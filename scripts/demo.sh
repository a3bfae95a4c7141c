#!/usr/bin/env bash
# Sets up .venv, writes the bundled sample into the inbox, materializes every asset on it and
# prints where to look. REFINERY_HOME defaults to ./.refinery.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/refinery demo "$@"
