"""Per-code-point class tables for the compiled kernels, built from Python itself.

Each bit of :func:`char_flags` is what a Python regex class or ``str`` predicate says of that code
point, found by running it over every code point once (no hand-written ranges): so a kernel that
tests a bit agrees with the Python path that uses the regex or the predicate. Surrogate code points
(U+D800–U+DFFF) never reach a kernel (Arrow holds only valid UTF-8), and their entries are 0.

Building a table takes 0.05–0.2 CPU s (Python's regex and predicates over 1.1 M code points), paid by
every process that uses a kernel; :func:`stored` keeps each built table on disk, keyed by the Python
version, its Unicode database and what the table is made of, so a later process loads it (~1 ms).
"""

from __future__ import annotations

import hashlib
import inspect
import os
import re
import sys
import tempfile
import unicodedata
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np

WORD = 1  # \w
SPACE = 2  # \s
LETTER = 4  # [^\W\d_]
JOINER = 8  # ['’.\-]: joins two \w runs into one word
STRIP = 16  # str.isspace: what str.strip / lstrip / rstrip remove
BREAK = 32  # a line boundary of str.splitlines
PLAIN = 64  # ASCII "other": no dot, '#', space or break (set only in doc_counts' ASCII table)

_REGEX_BITS = ((r"\w+", WORD), (r"\s+", SPACE), (r"[^\W\d_]+", LETTER), (r"['’.\-]+", JOINER))


@cache
def _every_code_point() -> tuple[np.ndarray, str]:
    cps = np.arange(0x110000, dtype=np.uint32)
    every = cps[(cps < 0xD800) | (cps >= 0xE000)]
    return every, every.tobytes().decode("utf-32-le")


def stored(name: str, recipe: str, build: Callable[[], np.ndarray]) -> np.ndarray:
    """``build()``, kept as ``<name>-<key>.npy`` beside this module (``__pycache__/``) or, where that
    is read-only, under ``~/.cache/refinery/tables``; the key hashes ``recipe`` (what the table is made
    of), this module's source, the Python version and its Unicode database. A table that cannot be
    read or written is built in memory: the cache only saves time."""
    parts = [recipe, _own_source(), sys.version, unicodedata.unidata_version]
    key = hashlib.sha1("\0".join(parts).encode()).hexdigest()[:16]
    for folder in (Path(__file__).parent / "__pycache__", Path.home() / ".cache" / "refinery" / "tables"):
        path = folder / f"{name}-{key}.npy"
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError):
            pass
    table = build()
    for folder in (Path(__file__).parent / "__pycache__", Path.home() / ".cache" / "refinery" / "tables"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, suffix=".npy", delete=False) as tmp:
                np.save(tmp, table, allow_pickle=False)
            os.replace(tmp.name, folder / f"{name}-{key}.npy")
            break
        except OSError:
            continue
    return table


@cache
def _own_source() -> str:
    """This module's source (a change to how tables are built changes every key); empty where the
    interpreter has no source to give (then the version and the recipe still key the tables)."""
    try:
        return inspect.getsource(sys.modules[__name__])
    except (OSError, TypeError):
        return ""


@cache
def char_flags() -> np.ndarray:
    """uint8 per code point (0x110000 entries): the bits above (built once, :func:`stored`)."""
    return stored("char_flags", repr(_REGEX_BITS), _char_flags)


def _char_flags() -> np.ndarray:
    every, text = _every_code_point()
    table = np.zeros(0x110000, dtype=np.uint8)
    for pattern, bit in _REGEX_BITS:
        for m in re.finditer(pattern, text):
            table[every[m.start() : m.end()]] |= bit
    table[every[np.frombuffer(_predicate_mask(text, str.isspace), dtype=np.bool_)]] |= STRIP
    # splitlines: every line it cuts from the text of all code points ends in one break character
    # (no two breaks are adjacent there but "\r" and "\n" are not: U+000E lies between them);
    # the kernels pair "\r\n" as one break, as splitlines does.
    lines = text.splitlines(keepends=True)
    ends = [ord(line[-1]) for line in lines[:-1]]
    if lines and lines[-1].splitlines() != [lines[-1]]:
        ends.append(ord(lines[-1][-1]))
    table[ends] |= BREAK
    return table


def _predicate_mask(text: str, predicate) -> bytes:
    return bytes(map(predicate, text))


def class_table(pattern: re.Pattern[str]) -> np.ndarray:
    """bool per code point (0x110000 entries): whether the one-character class ``pattern`` matches it."""
    every, text = _every_code_point()
    table = np.zeros(0x110000, dtype=np.bool_)
    for m in re.finditer(f"(?:{pattern.pattern})+", text, pattern.flags):
        table[every[m.start() : m.end()]] = True
    return table


def bits_table(classes: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """uint8 per code point: each (bool table, bit) of ``classes`` or-ed in."""
    table = np.zeros(0x110000, dtype=np.uint8)
    for member, bit in classes:
        table[member] |= bit
    return table


def chars_table(chars: str) -> np.ndarray:
    """bool per code point: whether it is one of ``chars``."""
    table = np.zeros(0x110000, dtype=np.bool_)
    table[[ord(c) for c in chars]] = True
    return table
