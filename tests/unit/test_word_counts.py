"""The batch paths of the heuristic chain equal the per-document paths they replace.

- :func:`word_counts` (a whole batch's word, token and letter-word counts from its code points)
  equals the counts of the word and token lists, on real text, crafted edge cases and generated
  strings;
- ``filter_batch`` (counts first, lists only where a rule asks) gives the same kept and rejected
  frames, scores and reasons as :func:`evaluate` document by document without counts (the list
  path), under configurations where most documents fail the first rule and where most pass;
- the repetition rule's duplicate and top n-gram counts equal the plain left-to-right scan and
  the sort-based count they replaced (kept here as the reference).
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinery.filters.gopher_repetition import duplicate_ngram_chars, top_ngram_chars
from refinery.filters.params import HeuristicParams
from refinery.text.word_counts import letter_word_count, word_counts
from refinery.text.words import tokens, words
from tests.unit.filter_paths import assert_filter_batch_equals_the_list_path
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CRAFTED = [
    "",
    "a",
    "...",
    "-a",
    "a-",
    "'",
    "a'b'",
    ".x.y.",
    "don't stop-me.now 3.5 x",
    "lone \ud800 surrogate",
    "ÀÉ __ _a_ ’’ a’b -a- a--b",
    "\x00\x1c\x1f text\u2028more\x85",
    "𝒥ohn 😀 𝟘 ²³ ½ ٣٤ x²",
    "tabs\tand\nnewlines",
    "1.2.a 5..a a.5 _1_ 3-4",
]
ALPHABET = "aZé_1²٣'’.-#… \n\t\u00a0!{}[]😀𝟘"


def expected(text: str) -> tuple[int, int, int, int]:
    wrds = words(text)
    return len(wrds), sum(map(len, wrds)), letter_word_count(wrds), len(tokens(text))


def counted(texts: list[str]) -> list[tuple[int, int, int, int]]:
    c = word_counts(texts)
    columns = (c.words, c.word_length, c.letter_words, c.tokens)
    return list(zip(*(col.tolist() for col in columns), strict=True))


def test_word_counts_equal_the_lists_on_real_and_crafted_text():
    docs = list(real_documents()) + CRAFTED
    assert counted(docs) == [expected(t) for t in docs]
    ascii_docs = [t for t in docs if t.isascii()]  # the bytes.translate path
    assert counted(ascii_docs) == [expected(t) for t in ascii_docs]


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(alphabet=ALPHABET, max_size=40), max_size=6))
def test_word_counts_equal_the_lists_on_generated_text(texts):
    assert counted(texts) == [expected(t) for t in texts]


def test_word_counts_of_empty_batches():
    assert counted([]) == []
    assert counted(["", ""]) == [(0, 0, 0, 0), (0, 0, 0, 0)]


@pytest.mark.parametrize(
    "overrides",
    [
        {},  # most real documents fail Gopher quality here
        {"min_alpha_words_ratio": None, "min_doc_words": None, "c4_min_sentences": None},  # most pass
        {"gopher_repetition": False, "min_alpha_words_ratio": None},  # words from the text, not tokens
    ],
)
def test_filter_batch_equals_the_per_document_path(overrides):
    crafted = [t for t in CRAFTED if "\ud800" not in t]  # a frame's Arrow strings cannot hold it
    docs = list(real_documents(60)) + crafted + ["word " * 60 + "and the of to.", "the cat sat. " * 40]
    assert_filter_batch_equals_the_list_path(docs, HeuristicParams(**overrides))


def scan_reference(h: np.ndarray, cum: np.ndarray, n: int) -> int:
    """The duplicate n-gram scan as datatrove writes it: every position, a seen set, skip on a repeat."""
    seen, i, chars, hl = set(), 0, 0, h.tolist()
    while i < len(hl):
        if hl[i] in seen:
            chars += int(cum[i + n] - cum[i])
            i += n
        else:
            seen.add(hl[i])
            i += 1
    return chars


def top_reference(h: np.ndarray, cum: np.ndarray, n: int) -> int:
    _, first, counts = np.unique(h, return_index=True, return_counts=True)
    i = int(first[counts == counts.max()].min())
    return int(cum[i + n] - cum[i] + (n - 1)) * int(counts.max())


def test_ngram_counts_equal_the_reference_scans():
    rng = np.random.default_rng(7)
    for _ in range(3000):
        m, k, n = int(rng.integers(1, 50)), int(rng.integers(1, 7)), int(rng.integers(1, 11))
        h = rng.integers(0, k, size=m).astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        cum = np.concatenate([[0], np.cumsum(rng.integers(1, 9, size=m + n))])
        assert duplicate_ngram_chars(h, cum, n) == scan_reference(h, cum, n)
        assert top_ngram_chars(h, cum, n) == top_reference(h, cum, n)
