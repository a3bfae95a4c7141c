"""Strings Python hands the readers that UTF-8 (so Arrow and Parquet) cannot hold.

JSON may spell a lone UTF-16 surrogate (``"\\ud800"``), and Python's ``json`` returns it inside a
``str``; a file name that is not UTF-8 comes back from the file system (and from tar headers)
with its bytes as surrogates (PEP 383). Either would make the Parquet writer fail the whole
partition. So the readers quarantine a record holding one (reason ``invalid_unicode``, with its
raw bytes) and show such file names with the undecodable bytes escaped (``\\x80``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

# A JSON escape of a surrogate code point (U+D800..U+DFFF): the only way one enters a record
# parsed from valid UTF-8, so records without it need no walk.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_ESCAPE_BYTES = re.compile(_SURROGATE_ESCAPE.pattern.encode())


def may_hold_surrogates(raw: bytes | str) -> bool:
    """Whether JSON text ``raw`` spells a surrogate escape (cheap pre-check for :func:`lone_surrogate`)."""
    pattern = _SURROGATE_ESCAPE_BYTES if isinstance(raw, bytes) else _SURROGATE_ESCAPE
    return pattern.search(raw) is not None


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def lone_surrogate(value: object, where: str = "record") -> str | None:
    """Where the first string holding a lone surrogate sits in a parsed JSON value
    (``record.text``, ``record.meta[2]``, ``a key of record``), or None."""
    if isinstance(value, str):
        return where if _has_surrogate(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if _has_surrogate(key):
                return f"a key of {where}"
            found = lone_surrogate(item, f"{where}.{key}")
            if found:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = lone_surrogate(item, f"{where}[{i}]")
            if found:
                return found
    return None


def display_name(name: str) -> str:
    """A file name as valid Unicode: bytes that were not UTF-8 shown as ``\\xNN``."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        pass
    try:
        return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a surrogate that is not an escaped byte
        return name.encode("utf-8", "backslashreplace").decode("utf-8")


def open_parquet(path: Path) -> pq.ParquetFile:
    """A Parquet file by its name's bytes: pyarrow encodes a ``str`` path as strict UTF-8, so it
    cannot open a file whose name is not (the file closes when the ParquetFile is freed)."""
    return pq.ParquetFile(pa.OSFile(os.fsencode(path)))
