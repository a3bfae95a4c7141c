"""Loading a KenLM model for scoring: checked format, checked order, once per process.

A user may point Refinery at any ``.arpa`` or ``.binary`` file, so before handing it to KenLM we
check that it is one (KenLM's own errors on a wrong file are terse), and that its order is the one
configured: a 3-gram model scored as a 5-gram would give perplexities that no bucket cutoff or
threshold was chosen for.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from refinery.quality.artifacts import file_sha256

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
