"""Word and token splitting shared by the quality rules and the dedup stages.

The quality rules count punctuation as tokens (as spaCy-based implementations do), so a token
is either a word — letters/digits joined by apostrophes, hyphens or dots, as in "don't",
"well-known" or "3.5" — or a single non-space symbol. Both regexes run in C; the rules then
work on the resulting lists with built-ins instead of per-character Python loops.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from functools import cache

import numpy as np

WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*")
TOKEN_RE = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]")
NON_WORD = re.compile(r"[\W_]+")
DIGIT = re.compile(r"\d")
COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def tokens(text: str) -> list[str]:
    """Words and single punctuation/symbol characters, in order."""
    return TOKEN_RE.findall(text)


def words(text: str) -> list[str]:
    """Only the word tokens of :func:`tokens`."""
    return WORD_RE.findall(text)


def word_tokens(toks: list[str]) -> list[str]:
    r"""The words among already-split tokens (cheaper than a second regex pass over the text).

    Symbol tokens are single non-word characters; ``\w`` is ``str.isalnum()`` plus ``_``.
    """
    return [t for t in toks if t[0].isalnum() or t[0] == "_"]


def simplify(text: str) -> str:
    """Case-, punctuation-, digit- and accent-insensitive form used for dedup.

    Lowercase, accents stripped, every digit becomes ``0``, every run of characters that are
    not letters or digits becomes one space. Two documents that differ only in case,
    punctuation, spacing, digits or diacritics simplify to the same string, so exact dedup
    catches them and their MinHash shingles match. (``refinery.dedup.minhash`` applies the
    same mapping to ASCII bytes with a lookup table; tests hold the two paths equal.)
    """
    text = text.lower()
    if not text.isascii():
        text = COMBINING.sub("", unicodedata.normalize("NFD", text))
    text = DIGIT.sub("0", text)
    return NON_WORD.sub(" ", text).strip()


_WORD_CHAR, _SPACE_CHAR, _OTHER_CHAR = 0, 1, 2


@cache
def _char_class_table() -> np.ndarray:
    """Per code point: 0 if ``\\w`` matches it, 1 if ``\\s`` does, else 2 (from Python's own regex
    engine, so the counts below agree with the token regexes by construction)."""
    cps = np.arange(0x110000, dtype=np.uint32)
    every = cps[(cps < 0xD800) | (cps >= 0xE000)]
    text = every.tobytes().decode("utf-32-le")
    table = np.full(0x110000, _OTHER_CHAR, dtype=np.uint8)
    for pattern, code in ((r"\w+", _WORD_CHAR), (r"\s+", _SPACE_CHAR)):
        for m in re.finditer(pattern, text):
            table[every[m.start() : m.end()]] = code
    return table


def char_class_counts(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Per text, the number of word characters (``\\w``) and of characters that are neither word
    characters nor whitespace, for a whole batch in a few numpy passes."""
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    if not len(texts) or not lengths.sum():
        return np.zeros(len(texts), dtype=np.int64), np.zeros(len(texts), dtype=np.int64)
    cps = np.frombuffer("".join(texts).encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = _char_class_table()
    kind = table[:0x10000][np.minimum(cps, 0xFFFF)]  # a 64 KB table stays in cache
    astral = np.flatnonzero(cps > 0xFFFF)
    kind[astral] = table[cps[astral]]
    # Positions of the rarer classes, counted per document by where its boundaries fall.
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    other = np.diff(np.searchsorted(np.flatnonzero(kind == _OTHER_CHAR), bounds))
    space = np.diff(np.searchsorted(np.flatnonzero(kind == _SPACE_CHAR), bounds))
    return lengths - other - space, other


def token_count(wrds: list[str], word_chars: int, other_chars: int) -> int:
    """``len(tokens(text))`` from the text's words and character counts, without the token list.

    Every word character belongs to a word token, and the only other characters inside word
    tokens are the joiners (``'’.-``) between them, so the words hold
    ``sum(len(w)) - word_chars`` joiners; every other non-space character is a symbol token."""
    return len(wrds) + other_chars - (sum(map(len, wrds)) - word_chars)
