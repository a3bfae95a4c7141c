#!/usr/bin/env bash
# The Debian packages behind the language-ID evaluation sets (benchmarks/bench_language_models.py,
# benchmarks/bench_parsing.py language): translated manual pages under /usr/share/man/<lang>/ and
# program translations under /usr/share/locale/<lang>/LC_MESSAGES/*.mo. Run once, as root, on a
# machine that lacks them; the benchmarks skip (and name) the languages they cannot find.
set -euo pipefail
packages=(
  groff-base man-db
  # whole translated man-page sets
  manpages-de manpages-fr manpages-es manpages-it manpages-pl manpages-pt manpages-ru
  manpages-ja manpages-zh manpages-nl manpages-cs manpages-da manpages-fi manpages-hu
  manpages-ro manpages-sv manpages-uk manpages-tr manpages-sr manpages-mk manpages-ko
  # translations (.mo) of everyday tools, in many languages each
  coreutils tar gettext-base
)
apt-get update
available=()
for p in "${packages[@]}"; do
  if apt-cache show "$p" >/dev/null 2>&1; then available+=("$p"); else echo "not in this release: $p"; fi
done
DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${available[@]}"
