"""The token count the chain computes without building the token list equals ``len(tokens(text))``."""

import pytest

from refinery.text.words import char_class_counts, token_count, tokens, words
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CRAFTED = [
    "",
    "a",
    "...",
    "don't stop-me.now 3.5 x",
    "lone \ud800 surrogate",
    "ÀÉ __ _a_ ’’ a’b -a- a--b",
    "\x00\x1c\x1f text\u2028more\x85",
    "𝒥ohn 😀 𝟘 ²³ ½ ٣٤",
    "tabs\tand\nnewlines",
]


def test_token_count_equals_the_token_list():
    docs = list(real_documents()) + CRAFTED
    word_chars, other_chars = char_class_counts(docs)
    for text, w, o in zip(docs, word_chars.tolist(), other_chars.tolist(), strict=True):
        assert token_count(words(text), w, o) == len(tokens(text)), text[:60]


def test_empty_batches():
    assert [a.tolist() for a in char_class_counts([])] == [[], []]
    assert [a.tolist() for a in char_class_counts(["", "ab c!"])] == [[0, 3], [0, 1]]
