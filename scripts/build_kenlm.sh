#!/usr/bin/env bash
# Builds KenLM's trainer (lmplz) and build_binary into .tools/kenlm/bin.
#
# `pip install kenlm` only queries models; the trainer is C++ in the same package's source
# distribution (lm/builder). We fetch that sdist through pip (the version of the installed kenlm
# module, so trainer and query code agree), configure it with cmake against Debian's boost, zlib,
# bz2 and lzma dev packages, and build just the two programs (about a minute on two cores).
#
# Idempotent: exits at once when both programs are already there and run. The Debian packages
# are installed only when missing (needs root; otherwise it says which to install).
# Environment: KENLM_SDIST=/path/kenlm-x.y.z.tar.gz uses a local sdist instead of pip;
# REFINERY_KENLM_PREFIX overrides the install folder (default <repo>/.tools/kenlm);
# REFINERY_TOOL_CACHE is the machine-wide cache another clone's build is copied from (default
# ~/.cache/refinery/tools; "off" turns it off).
set -euo pipefail
cd "$(dirname "$0")/.."
repo="$PWD"
prefix="${REFINERY_KENLM_PREFIX:-$repo/.tools/kenlm}"
bin="$prefix/bin"

works() {
  # lmplz --help exits 1 by design; look for its usage text instead of the status.
  [ -x "$bin/lmplz" ] && [ -x "$bin/build_binary" ] || return 1
  local usage
  usage="$("$bin/lmplz" --help 2>&1 || true)"
  [[ "$usage" == *"--order"* ]]
}
if works; then
  echo "build_kenlm: lmplz and build_binary already in $bin"
  exit 0
fi

python="$repo/.venv/bin/python"
[ -x "$python" ] || python="${PYTHON:-python3}"
version="$("$python" -c 'import importlib.metadata as m; print(m.version("kenlm"))' 2>/dev/null || true)"

# The machine-wide tool cache (refinery/tool_cache.py): the programs another clone built from the
# same KenLM version with this same script are copied instead of compiled. Off with
# REFINERY_TOOL_CACHE=off, and for a KENLM_SDIST of one's own.
cached=""
if [ -z "${KENLM_SDIST:-}" ] && [ -n "$version" ]; then
  if [ -z "${REFINERY_TOOL_CACHE+set}" ]; then
    cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/refinery/tools"
  else
    cache_root="$REFINERY_TOOL_CACHE"
    case "${cache_root,,}" in off | 0 | none | false) cache_root="" ;; esac
  fi
  if [ -n "$cache_root" ]; then
    key="$version-$(uname -m)-$(sha256sum "$repo/scripts/build_kenlm.sh" | cut -c1-12)"
    cached="${cache_root/#\~/$HOME}/kenlm/$key"
  fi
fi
if [ -n "$cached" ] && [ -x "$cached/lmplz" ] && [ -x "$cached/build_binary" ]; then
  mkdir -p "$bin"
  for program in lmplz build_binary; do
    install -m 0755 "$cached/$program" "$bin/$program.tmp"
    mv -f "$bin/$program.tmp" "$bin/$program"
  done
  if works; then
    echo "build_kenlm: copied lmplz and build_binary from the tool cache ($cached) to $bin"
    exit 0
  fi
  echo "build_kenlm: the cached programs in $cached do not run here; building" >&2
fi

packages=(cmake g++ make libboost-program-options-dev libboost-system-dev libboost-thread-dev
  libboost-test-dev zlib1g-dev libbz2-dev liblzma-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "build_kenlm: missing Debian packages: ${missing[*]}" >&2
    echo "build_kenlm: run as root, or: sudo apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
  echo "build_kenlm: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/refinery-kenlm.XXXXXX")"
trap 'rm -rf "$work"' EXIT

sdist="${KENLM_SDIST:-}"
if [ -z "$sdist" ]; then
  spec="kenlm${version:+==$version}"
  echo "build_kenlm: fetching the $spec source distribution"
  # --no-binary kenlm (not :all:): only kenlm comes as source; its build backend comes as wheels.
  "$python" -m pip download --quiet --disable-pip-version-check --no-deps --no-binary kenlm \
    -d "$work/dl" "$spec"
  sdist="$(ls "$work"/dl/kenlm-*.tar.gz | head -n1)"
fi
[ -f "$sdist" ] || { echo "build_kenlm: no KenLM source distribution at '$sdist'" >&2; exit 1; }
tar -xzf "$sdist" -C "$work"
src="$(find "$work" -maxdepth 5 -type f -path '*/lm/builder/lmplz_main.cc' -printf '%h\n' | head -n1)"
[ -n "$src" ] || { echo "build_kenlm: $sdist has no lm/builder (not a KenLM source tree)" >&2; exit 1; }
src="$(cd "$src/../.." && pwd)"

jobs="$(nproc 2>/dev/null || echo 2)"
echo "build_kenlm: building lmplz and build_binary from $(basename "$sdist") with $jobs jobs"
cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DCOMPILE_TESTS=OFF -DENABLE_PYTHON=OFF \
  -DENABLE_INTERPOLATE=OFF >"$work/cmake.log" 2>&1 || { cat "$work/cmake.log" >&2; exit 1; }
cmake --build "$work/build" --target lmplz build_binary -j "$jobs" >"$work/make.log" 2>&1 \
  || { tail -n 60 "$work/make.log" >&2; exit 1; }

mkdir -p "$bin"
for program in lmplz build_binary; do
  built="$(find "$work/build" -type f -name "$program" -perm -u+x | head -n1)"
  [ -n "$built" ] || { echo "build_kenlm: the build produced no $program" >&2; exit 1; }
  install -m 0755 "$built" "$bin/$program.tmp"
  mv -f "$bin/$program.tmp" "$bin/$program"
done
works || { echo "build_kenlm: $bin/lmplz does not run after the build" >&2; exit 1; }
echo "build_kenlm: installed lmplz and build_binary in $bin"
if [ -n "$cached" ]; then # keep a copy for other clones (a failure here costs them a build, no more)
  staging="$cached.$$.tmp"
  if mkdir -p "$staging" && cp "$bin/lmplz" "$bin/build_binary" "$staging/" \
    && rm -rf "$cached" && mv "$staging" "$cached"; then
    echo "build_kenlm: kept a copy for other clones in $cached"
  else
    rm -rf "$staging"
  fi
fi
