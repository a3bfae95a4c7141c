"""Word and token counts of a whole batch of texts in a few numpy passes, without word lists.

The heuristic chain's first rule (Gopher quality) needs, per document, only counts: its words
(:data:`refinery.text.words.WORD_RE`), their total length, how many hold a letter, and its tokens
(words plus single symbol characters). On real corpora that rule rejects most documents (82 % of
the real-text benchmark: man pages and docstrings fail its alphabetic-token share), so listing
every document's words with a regex only to count them was the chain's largest cost. Here the
counts come from the batch's code points instead, and the word and token lists are built later,
only for the documents a rule still needs them for.

Why the counts are exact: a character belongs to a word of ``\\w+(?:['’.\\-]\\w+)*`` iff it is
``\\w``, or it is a joiner (``'’.-``) with ``\\w`` on both sides (every ``\\w`` character is consumed
by some match, and a match continues across a joiner exactly when a ``\\w`` follows it). The words
are then the maximal runs of such characters, since a match ends only before a character that can
neither extend it nor join. Documents are joined with a newline (whitespace: neither a word
character nor a joiner), so no run or joiner crosses from one document into the next. The
character classes come from Python's own regex engine (:func:`_flag_table`), so they agree with
the regexes by construction; ``tests/unit/test_word_counts.py`` holds the counts equal to the
lists on real and generated text.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from itertools import filterfalse

import numpy as np

from refinery.text.lookup import unit_lookup
from refinery.text.span_counts import true_per_span

WORD, SPACE, LETTER, JOINER = 1, 2, 4, 8
_ANY_LETTER = re.compile(r"[^\W\d_]")


@dataclass(frozen=True)
class WordCounts:
    """Per document of a batch (one int64 array each, in the batch's order).

    - ``word_chars``: ``\\w`` characters; ``other_chars``: characters neither ``\\w`` nor whitespace.
    - ``words``: ``len(words(text))``; ``word_length``: ``sum(map(len, words(text)))``.
    - ``letter_words``: words holding a letter (``[^\\W\\d_]``), as :func:`letter_word_count` counts.
    - ``tokens``: ``len(tokens(text))``: every other character is a one-character symbol token,
      and the words hold ``word_length - word_chars`` joiners.
    """

    word_chars: np.ndarray
    other_chars: np.ndarray
    words: np.ndarray
    word_length: np.ndarray
    letter_words: np.ndarray

    @property
    def tokens(self) -> np.ndarray:
        return self.words + self.other_chars - (self.word_length - self.word_chars)

    def rows(self) -> list[DocCounts]:
        """One :class:`DocCounts` per document (plain ints, for the per-document rules)."""
        columns = (self.word_chars, self.other_chars, self.words, self.word_length, self.letter_words)
        return [
            DocCounts(*row) for row in zip(*(c.tolist() for c in columns), self.tokens.tolist(), strict=True)
        ]


@dataclass(frozen=True, slots=True)
class DocCounts:
    """One document's row of :class:`WordCounts`."""

    word_chars: int
    other_chars: int
    words: int
    word_length: int
    letter_words: int
    tokens: int
    shape: DocShape | None = None  # from the compiled pass (refinery.text.kernels.doc_counts)


@dataclass(frozen=True, slots=True)
class DocShape:
    """What Gopher quality reads of a document besides its words, counted by the compiled pass:
    ``text.count("#")``, ``text.count("...") + text.count("…")``, ``len(text.splitlines() or
    [text])``, and the lines that, stripped, start with one of ``bullet_prefixes`` or end in an
    ellipsis."""

    hashes: int
    ellipses: int
    lines: int
    bullet_lines: int
    ellipsis_lines: int
    bullet_prefixes: tuple[str, ...]


def letter_word_count(wrds: list[str]) -> int:
    """Words holding a letter: all-letter words, plus mixed ones ("don't", "mp3") that hold one."""
    pure = sum(map(str.isalpha, wrds))
    return pure + sum(map(bool, map(_ANY_LETTER.search, filterfalse(str.isalpha, wrds))))


@cache
def _flag_table() -> np.ndarray:
    """Per code point, the bits WORD (``\\w``), SPACE (``\\s``), LETTER (``[^\\W\\d_]``) and JOINER
    (``['’.\\-]``), each found by Python's regex engine over every code point."""
    cps = np.arange(0x110000, dtype=np.uint32)
    every = cps[(cps < 0xD800) | (cps >= 0xE000)]
    text = every.tobytes().decode("utf-32-le")
    table = np.zeros(0x110000, dtype=np.uint8)
    for pattern, bit in ((r"\w+", WORD), (r"\s+", SPACE), (r"[^\W\d_]+", LETTER), (r"['’.\-]+", JOINER)):
        for m in re.finditer(pattern, text):
            table[every[m.start() : m.end()]] |= bit
    return table


def _per_document(positions: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many of the sorted ``positions`` fall in each [bounds[i], bounds[i] + lengths[i]) (the
    document's newline, last in its segment, is never one of them)."""
    return np.diff(np.searchsorted(positions, bounds))


@cache
def _ascii_flags() -> bytes:
    """:func:`_flag_table` for the 128 ASCII code points, as a :meth:`bytes.translate` table."""
    return bytes(_flag_table()[:128].tolist()) + bytes(128)


def _flags(texts: Sequence[str]) -> np.ndarray:
    """The flags of every character of ``texts``, each text followed by a newline. An ASCII batch
    goes through :meth:`bytes.translate` (one C pass over its bytes, twice as fast); any other is
    read as UTF-16 (:func:`_utf16_flags`: half the bytes of UTF-32), or, where it holds a lone
    surrogate, decoded to UTF-32 code points and looked up in :func:`_flag_table`."""
    text = "\n".join([*texts, ""])  # the final newline without a second copy of the whole batch
    if text.isascii():
        return np.frombuffer(text.encode("ascii").translate(_ascii_flags()), dtype=np.uint8)
    try:
        return _utf16_flags(text.encode("utf-16-le"), len(text))  # strict: lone surrogates raise
    except UnicodeEncodeError:
        pass
    cps = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    table = _flag_table()
    flags = table[:0x10000][np.minimum(cps, 0xFFFF)]  # a 64 KB table stays in cache
    astral = np.flatnonzero(cps > 0xFFFF)
    if len(astral):
        flags[astral] = table[cps[astral]]
    return flags


def _utf16_flags(encoded: bytes, length: int) -> np.ndarray:
    """:func:`_flag_table` of each of the ``length`` code points of a text without lone surrogates,
    from its UTF-16 bytes: a unit is its own code point except in the surrogate pairs of characters
    beyond U+FFFF (then the only surrogates there are), whose code point is looked up at the high
    unit and whose low unit is dropped."""
    table = _flag_table()
    units = np.frombuffer(encoded, dtype=np.uint16)
    flags = unit_lookup(table[:0x10000], units)  # a 64 KB table stays in cache; no intp copy
    if len(units) == length:
        return flags
    high = np.flatnonzero((units & 0xFC00) == 0xD800)
    low = units[high + 1].astype(np.uint32) - 0xDC00
    flags[high] = table[0x10000 + ((units[high].astype(np.uint32) - 0xD800) << 10) + low]
    return np.delete(flags, high + 1)


def word_counts(texts: Sequence[str]) -> WordCounts:
    """:class:`WordCounts` of ``texts`` (see the module docstring for why they are exact)."""
    n = len(texts)
    lengths = np.fromiter(map(len, texts), dtype=np.int64, count=n)
    if not n or not lengths.sum():
        zero = np.zeros(n, dtype=np.int64)
        return WordCounts(zero, zero, zero, zero, zero)
    # Document i is [bounds[i], bounds[i] + lengths[i]), then its newline.
    bounds = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths + 1, out=bounds[1:])
    flags = _flags(texts)
    word = (flags & WORD).view(np.bool_)
    # A joiner between two word characters joins them (never the first or the last character:
    # a joiner at 0 has no left neighbour, and the last is a newline).
    joiners = np.flatnonzero(flags & JOINER)
    joiners = joiners[joiners > 0]
    joined = joiners[word[joiners - 1] & word[joiners + 1]]
    in_word = word.copy()
    in_word[joined] = True
    word_start = np.flatnonzero(in_word[1:] > in_word[:-1])
    word_start += 1  # in place: the index is ~8 bytes per word of the batch
    if in_word[0]:
        word_start = np.concatenate([[0], word_start])
    first = np.searchsorted(word_start, bounds)
    letter_sum = np.zeros(len(word_start) + 1, dtype=np.int64)
    if len(word_start):
        # A letter is a word character, so the span from a word's start to the next word's start
        # holds a letter iff the word does.
        has_letter = np.logical_or.reduceat((flags & LETTER).view(np.bool_), word_start)
        np.cumsum(has_letter, out=letter_sum[1:])
    # Counted in place per document (no index of every space or symbol position).
    other = lengths + 1 - true_per_span(flags & (WORD | SPACE), bounds)
    space = true_per_span(flags & SPACE, bounds) - 1  # less the newline
    word_chars = lengths - other - space
    return WordCounts(
        word_chars=word_chars,
        other_chars=other,
        words=np.diff(first),
        word_length=word_chars + _per_document(joined, bounds),
        letter_words=np.diff(letter_sum[first]),
    )
