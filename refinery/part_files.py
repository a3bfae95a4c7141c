"""Part files: how a partition's parts are named and in which order they are read.

Below both :mod:`refinery.storage` (which writes them) and :mod:`refinery.manifest` (which lists
them), so the writer can seal a folder with its manifest without an import cycle.
"""

from __future__ import annotations

import re
from pathlib import Path

PART_PATTERN = "part-*.parquet"
PART_NAME = re.compile(r"^part-(\d{5,})\.parquet$")


def part_order(path: Path | str) -> tuple[int, str]:
    """Sort key of a part file: its number, so ``part-100000`` follows ``part-99999`` at any count
    (names are zero-padded to five digits and grow beyond); other names after, by name."""
    name = Path(path).name
    found = PART_NAME.match(name)
    return (int(found.group(1)), name) if found else (1 << 62, name)


def parquet_files(path: Path | None) -> list[Path]:
    """The files of one partition's output, in row order: the file itself, or a folder's
    ``part-*.parquet`` files in the order of their numbers (:func:`part_order`)."""
    if path is None:
        return []
    if path.is_file():
        return [path]
    if path.is_dir():
        return sorted(path.glob(PART_PATTERN), key=part_order)
    return []
