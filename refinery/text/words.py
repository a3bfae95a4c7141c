"""Word and token splitting shared by the quality rules and the dedup stages.

The quality rules count punctuation as tokens (as spaCy-based implementations do), so a token
is either a word — letters/digits joined by apostrophes, hyphens or dots, as in "don't",
"well-known" or "3.5" — or a single non-space symbol. Both regexes run in C; the rules then
work on the resulting lists with built-ins instead of per-character Python loops.
"""

from __future__ import annotations

import re
import unicodedata

WORD_RE = re.compile(r"\w+(?:['’.\-]\w+)*")
TOKEN_RE = re.compile(r"\w+(?:['’.\-]\w+)*|[^\w\s]")
_NON_WORD = re.compile(r"[\W_]+")
_DIGIT = re.compile(r"\d")
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


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
        text = _COMBINING.sub("", unicodedata.normalize("NFD", text))
    text = _DIGIT.sub("0", text)
    return _NON_WORD.sub(" ", text).strip()
