"""The word counts' character flags read from UTF-16 (with surrogate pairs for characters beyond
U+FFFF) equal the flags of each code point looked up one by one, and the UTF-32 path where a lone
surrogate makes UTF-16 impossible."""

import random

import numpy as np

from refinery.text.word_counts import _flag_table, _flags
from tests.unit.real_text import real_documents

ALPHABET = [
    "a",
    "Z",
    "9",
    "_",
    " ",
    "\n",
    "-",
    "'",
    "’",
    ".",
    "é",
    "ß",
    "中",
    "٣",
    "\u2028",
    "😀",
    "𝔘",
    "\U0001f9d1\u200d",
    "𐍈",
]


def reference(texts: list[str]) -> np.ndarray:
    table = _flag_table()
    return np.array([table[ord(c)] for c in "\n".join(texts) + "\n"], dtype=np.uint8)


def test_flags_equal_the_code_point_lookup():
    rng = random.Random(11)
    generated = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))) for _ in range(400)]
    batches = [
        list(real_documents())[:40],
        generated,  # BMP and astral characters mixed: surrogate pairs in UTF-16
        [t for t in generated if not any(ord(c) > 0xFFFF for c in t)],  # BMP only: one unit each
        ["😀", "a😀b", "😀😀\n😀", ""],
        ["lone \ud800 surrogate", "😀 and \udc00"],  # the UTF-32 path
    ]
    for texts in batches:
        assert np.array_equal(_flags(texts), reference(texts))
