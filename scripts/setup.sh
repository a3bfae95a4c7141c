#!/usr/bin/env bash
# Creates .venv at the repository root and installs Refinery into it (editable), with the
# extras named in $1 (e.g. "dev"). Idempotent: a stamp keyed on pyproject.toml and the extras
# skips pip entirely when nothing changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras="${1:-}"
started=$SECONDS
step() { # prints how long the setup took so far, so a slow step shows in CI's log
  echo "setup: $1 ($((SECONDS - started)) s since setup started)"
}
python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "setup: Refinery needs Python 3.11 or newer (found: $("$python" --version 2>&1)); set PYTHON=..." >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$python" -m venv .venv
fi

stamp=".venv/.refinery-installed-$(cat pyproject.toml | sha256sum | cut -c1-16)-${extras:-base}"
if [ ! -f "$stamp" ]; then
  echo "setup: installing Refinery${extras:+ [$extras]} into .venv (first time: a few minutes)"
  .venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".${extras:+[$extras]}"
  rm -f .venv/.refinery-installed-*
  touch "$stamp"
fi

# Headless Chromium for the browser test of the Dagster UI (tests/dagster/test_ui_browser.py) and
# scripts/ui_screenshots.py: Debian's package, driven by playwright from the dev extra (playwright
# never downloads browsers of its own here: never run `playwright install`).
if [[ ",$extras," == *",dev,"* ]] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's chromium (for the browser test of the Dagster UI)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "setup: skipping chromium: /usr/bin/chromium is missing and this is not root with apt-get;" \
      "the browser test skips (fails under CI=true) until 'apt-get install chromium' is run as root" >&2
  fi
fi

step "packages ready"
# The three builds below are minutes of CPU that depend on their recipe, not on the clone: each keeps a
# copy in the machine-wide tool cache ($REFINERY_TOOL_CACHE, default ~/.cache/refinery/tools; "off" turns
# it off: refinery/tool_cache.py), and a fresh clone (CI's) copies it from there instead of building.
# KenLM's trainer (lmplz, build_binary) for the reference language model; skips itself when built.
scripts/build_kenlm.sh
step "KenLM ready"

# The project's tiny CLIP for the image–text and video stages (no CLIP weights can be downloaded):
# trained once on generated scenes and cached under .tools/models/tiny-clip/<config hash>/.
.venv/bin/python -m refinery.multimodal.tiny_clip_train
step "tiny CLIP ready"

# The project's tiny chat model, served by `transformers serve` in the LLM tests and bench_llm (no
# weights can be downloaded; its text has no quality): cached under .tools/models/tiny-chat/<hash>/.
.venv/bin/python -m refinery.llm.tiny_chat_model
step "tiny chat model ready"
