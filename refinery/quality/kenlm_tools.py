"""KenLM's command-line trainer: finding ``lmplz``/``build_binary`` and running them.

The ``kenlm`` Python module can only query models. Training needs the C++ programs, which
``scripts/build_kenlm.sh`` builds from the same package's source distribution into
``.tools/kenlm/bin``. We look for them in ``$REFINERY_KENLM_BIN``, then there, then on ``PATH``,
and say how to build them when none is found.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

KENLM_BIN_ENV = "REFINERY_KENLM_BIN"
REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_BIN = REPO_ROOT / ".tools" / "kenlm" / "bin"
BUILD_SCRIPT = "scripts/build_kenlm.sh"
# lmplz and the query module are compiled with KENLM_MAX_ORDER=6 by default.
MAX_ORDER = 6


class KenLMToolsMissing(FileNotFoundError):
    """lmplz or build_binary is not installed where we look."""


class KenLMTrainingError(RuntimeError):
    """lmplz or build_binary failed; the message carries the end of its log."""


def find_kenlm_tool(name: str) -> Path:
    """Path of ``lmplz`` or ``build_binary``: ``$REFINERY_KENLM_BIN``, then .tools/kenlm/bin, then PATH."""
    searched: list[str] = []
    env_dir = os.environ.get(KENLM_BIN_ENV)
    if env_dir:
        candidate = Path(env_dir).expanduser() / name
        searched.append(str(candidate))
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    candidate = BUNDLED_BIN / name
    searched.append(str(candidate))
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    on_path = shutil.which(name)
    searched.append(f"{name} on PATH")
    if on_path:
        return Path(on_path)
    raise KenLMToolsMissing(
        f"KenLM's {name} was not found (looked at: {', '.join(searched)}). Build it with "
        f"`{BUILD_SCRIPT}` (about a minute; scripts/setup.sh runs it), or set {KENLM_BIN_ENV} to a "
        "folder holding lmplz and build_binary."
    )


@dataclass(frozen=True)
class LmplzOptions:
    order: int = 5
    memory: str = "1G"  # lmplz -S: sorting memory (GNU sort syntax)
    discount_fallback: bool = True
    prune: tuple[int, ...] = ()


def _run(command: list[str], what: str, log_path: Path) -> None:
    with log_path.open("wb") as log:
        proc = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=log, check=False)
    if proc.returncode != 0:
        tail = log_path.read_text(errors="replace").strip().splitlines()[-8:]
        raise KenLMTrainingError(
            f"{what} failed with exit status {proc.returncode}: {' '.join(command)}\n" + "\n".join(tail)
        )


def train_arpa(corpus: Path, arpa: Path, options: LmplzOptions) -> dict[int, int]:
    """Run ``lmplz`` on a corpus of normalized lines; returns the n-gram count per order.

    ``discount_fallback`` lets lmplz fall back to fixed discounts when the closed-form modified
    Kneser-Ney estimate fails, which happens on small or very regular corpora (a reference set of a
    few hundred KB); lmplz only uses it for the orders where the estimate fails.
    """
    if not 2 <= options.order <= MAX_ORDER:
        raise ValueError(f"KenLM order must be between 2 and {MAX_ORDER}, got {options.order}")
    lmplz = find_kenlm_tool("lmplz")
    with tempfile.TemporaryDirectory(prefix="refinery-lmplz-", dir=arpa.parent) as temp:
        command = [
            str(lmplz),
            "-o",
            str(options.order),
            "-S",
            options.memory,
            "-T",
            temp + os.sep,
            "--text",
            str(corpus),
            "--arpa",
            str(arpa),
        ]
        if options.discount_fallback:
            command.append("--discount_fallback")
        if options.prune:
            command += ["--prune", *map(str, options.prune)]
        _run(command, "lmplz", Path(temp) / "lmplz.log")
    return arpa_ngram_counts(arpa)


def build_binary(arpa: Path, binary: Path) -> None:
    """Convert ARPA to KenLM's mmap-able probing binary (loads in milliseconds, queries faster)."""
    tool = find_kenlm_tool("build_binary")
    with tempfile.TemporaryDirectory(prefix="refinery-build-binary-", dir=binary.parent) as temp:
        _run([str(tool), str(arpa), str(binary)], "build_binary", Path(temp) / "build_binary.log")


def arpa_ngram_counts(arpa: Path) -> dict[int, int]:
    """The ``ngram N=count`` lines of an ARPA header (empty if the header is missing)."""
    counts: dict[int, int] = {}
    with arpa.open("r", encoding="utf-8", errors="replace") as fh:
        in_data = False
        for line in fh:
            line = line.strip()
            if line == "\\data\\":
                in_data = True
            elif in_data and line.startswith("ngram "):
                order, _, count = line[len("ngram ") :].partition("=")
                counts[int(order)] = int(count)
            elif in_data and line.startswith("\\"):
                break
    return counts
