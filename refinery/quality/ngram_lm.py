"""KenLM n-gram models: training them with KenLM's programs, and loading them for scoring.

The ``kenlm`` Python module can only query models. Training needs the C++ programs, which
``scripts/build_kenlm.sh`` builds from the same package's source distribution into
``.tools/kenlm/bin``. We look for them in ``$REFINERY_KENLM_BIN``, then there, then on ``PATH``,
and say how to build them when none is found.

A user may also point Refinery at any ``.arpa`` or ``.binary`` file, so before handing it to
KenLM we check that it is one (KenLM's own errors on a wrong file are terse), and that its order
is the one configured: a 3-gram model scored as a 5-gram would give perplexities that no bucket
cutoff or threshold was chosen for.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from refinery.quality.artifacts import file_sha256

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


# -- loading a model for scoring ------------------------------------------------------------

BINARY_MAGIC = b"mmap lm http://kheafield.com/code"
ARPA_MARKER = "\\data\\"
_HEADER_BYTES = 1 << 16


class ModelFormatError(ValueError):
    """The file is not a KenLM model (neither ARPA text nor a KenLM binary)."""


class ModelOrderError(ValueError):
    """The model's n-gram order differs from the configured one."""


def model_format(path: Path) -> str:
    """'arpa' or 'binary', from the file's content (not its name); raises for anything else."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"no KenLM model at {path}: materialize the reference_lm asset (it trains one on the reference "
            "corpus), or set the kenlm resource's model_path to an existing .arpa or .binary file"
        )
    if path.is_dir():
        raise ModelFormatError(f"{path} is a directory, not a KenLM model file (.arpa or .binary)")
    with path.open("rb") as fh:
        head = fh.read(_HEADER_BYTES)
    if head.startswith(BINARY_MAGIC):
        return "binary"
    text = head.decode("utf-8", errors="replace")
    for line in text.splitlines():
        stripped = line.strip()
        if stripped == ARPA_MARKER:
            return "arpa"
        if stripped.startswith("\\") and stripped.endswith("-grams:"):
            break  # n-gram sections before \data\: not a valid ARPA file
    raise ModelFormatError(
        f"{path} is not a KenLM model: expected an ARPA file (text with a '\\data\\' header, as lmplz "
        f"writes) or a KenLM binary (made by build_binary, starting with {BINARY_MAGIC.decode()!r}); "
        f"it starts with {head[:40]!r}"
    )


@dataclass(frozen=True)
class LanguageModel:
    """A loaded KenLM model and what identifies it."""

    model: object  # kenlm.Model
    path: Path
    sha256: str
    order: int
    format: str

    def describe(self) -> dict:
        return {"path": str(self.path), "sha256": self.sha256, "order": self.order, "format": self.format}


@lru_cache(maxsize=4)
def _load(path: str, size: int, mtime_ns: int) -> tuple[object, str]:
    import kenlm

    fmt = model_format(Path(path))
    try:
        return kenlm.Model(path), fmt
    except (OSError, RuntimeError, ValueError) as err:
        raise ModelFormatError(f"KenLM could not load {path} as a {fmt} model: {err}") from err


def load_language_model(path: str | Path, expected_order: int | None = None) -> LanguageModel:
    """Load (once per file version in this process) and check the order when one is expected."""
    path = Path(path).expanduser().resolve()
    model_format(path)  # clear errors for a missing or foreign file before KenLM sees it
    stat = path.stat()
    model, fmt = _load(str(path), stat.st_size, stat.st_mtime_ns)
    order = int(model.order)
    if expected_order is not None and order != expected_order:
        raise ModelOrderError(
            f"{path} is a {order}-gram model but order {expected_order} is configured: set the kenlm "
            f"resource's order to {order}, or re-materialize reference_lm to train a {expected_order}-gram "
            "model"
        )
    return LanguageModel(model, path, file_sha256(path), order, fmt)
