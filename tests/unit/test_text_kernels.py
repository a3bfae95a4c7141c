"""The compiled kernels (``refinery/text/kernels/``) equal the Python paths they replace.

- :func:`batch_counts` (one pass over a batch's UTF-8 bytes) equals the word lists, ``str.count``,
  ``splitlines`` / ``lstrip`` / ``rstrip`` per document, on real text, crafted edge cases (``\\r\\n``,
  every ``splitlines`` break, ``\\x1f`` which is space but no break, combining marks, CJK, emoji,
  empty documents) and generated strings, under several bullet-prefix sets;
- ``filter_batch`` (kernel counts) gives the rows, reasons and scores of the list path
  (:func:`evaluate` without counts) under bullet prefixes other than the default;
- text Arrow cannot hold (a lone surrogate) takes the Python path;
- Gopher repetition's compiled n-gram counts equal the numpy reference (hashes, first-seen top
  n-gram, the duplicate scan) on random token ids with many repeats;
- cleaning's :func:`tidy_batch` (invisible characters and whitespace in one pass) equals the
  Python steps and the RE2 passes it replaced, under each combination of its two switches.
"""

from itertools import repeat

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from refinery.clean import normalize
from refinery.filters.chain import batch_rows
from refinery.filters.gopher_repetition import (
    duplicate_ngram_chars,
    ngram_char_counts,
    ngram_hashes,
    top_ngram_chars,
)
from refinery.filters.params import HeuristicParams
from refinery.text.kernels.doc_counts import batch_counts
from refinery.text.kernels.utf8 import large_strings
from refinery.text.word_counts import letter_word_count
from refinery.text.words import tokens, words
from tests.unit.filter_paths import assert_filter_batch_equals_the_list_path
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

CRAFTED = [
    "",
    " ",
    "\n",
    "\r\n",
    "a\r\n\r\nb\rc\n",
    "...",
    "....",
    "......",
    "… ...… . .. ...",
    "ab...\n  - x ...  \n\t• y…\u2028* z\x85· w\x1c-\x1d-\x1e-\x0b-\x0c-\x1f-",
    "-a\n--\n -\n\u3000•\u00a0*",
    "#hash ## tag #",
    "don't stop-me.now 3.5 x",
    "ÀÉ __ _a_ ’’ a’b -a- a--b e\u0301\u0301 n\u0303",
    "𝒥ohn 😀 𝟘 ²³ ½ ٣٤ x² 👩\u200d👩\u200d👧",
    "中文文本，没有空格。日本語のテキスト…",
    "tabs\tand\nnewlines\x00\x1b",
    "line\u2029para\u2028sep\x0bvt\x0cff",
    "  \n   \n",
    # the ASCII fast paths of the kernel: words parted by single spaces (ending the text, a line, a
    # joiner, digits only), dots in runs before breaks and words, a line feed after a joiner
    "a b c",
    "a b ",
    "1 2 a 3 _ x_ 4",
    "x y-z w'v u.t s- r",
    "a  b\tc \nd",
    "w ...\nx....\n..y. z...",
    "one...two.three\n...",
    "a-\nb a'\nb 2.\n3",
    " # #a a# a.#b a-#",
    "- a b\n* c d...\n· e …\n  -f",
    "word, word; (word) [w] w: w/w",
]
ASCII_ALPHABET = "ab1_ .-'#,\n\r\t*é"
ALPHABET = "aZé_1²٣'’.-#…•*· \n\r\t\x0b\x0c\x1c\x1f\x85\u2028\u00a0!{}😀𝟘中"
PREFIX_SETS = [("•", "-", "*", "·"), (), ("",), ("->", "- ", "••"), ("\n", "a")]


def expected(text: str, prefixes: tuple[str, ...]) -> tuple:
    wrds = words(text)
    lines = text.splitlines() or [text]
    return (
        len(wrds),
        sum(map(len, wrds)),
        letter_word_count(wrds),
        len(tokens(text)),
        text.count("#"),
        text.count("...") + text.count("…"),
        len(lines),
        sum(map(str.startswith, map(str.lstrip, lines), repeat(prefixes))),
        sum(map(str.endswith, map(str.rstrip, lines), repeat(("...", "…")))),
    )


def counted(texts: list[str], prefixes: tuple[str, ...]) -> list[tuple]:
    rows = batch_counts(large_strings(texts), prefixes).rows()
    out = []
    for r in rows:
        s = r.shape
        words_part = (r.words, r.word_length, r.letter_words, r.tokens)
        out.append((*words_part, s.hashes, s.ellipses, s.lines, s.bullet_lines, s.ellipsis_lines))
    return out


def test_doc_counts_equal_python_on_real_and_crafted_text():
    docs = list(real_documents()) + CRAFTED
    assert counted(docs, PREFIX_SETS[0]) == [expected(t, PREFIX_SETS[0]) for t in docs]
    for prefixes in PREFIX_SETS[1:]:
        assert counted(CRAFTED, prefixes) == [expected(t, prefixes) for t in CRAFTED]


def test_doc_counts_of_a_sliced_array_and_an_empty_batch():
    arr = large_strings(CRAFTED)[3:9]
    rows = batch_counts(arr, ("-",)).rows()
    assert [(r.words, r.shape.lines, r.shape.bullet_lines) for r in rows] == [
        (e[0], e[6], e[7]) for e in (expected(t, ("-",)) for t in CRAFTED[3:9])
    ]
    assert batch_counts(large_strings([]), ("-",)).rows() == []


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=ALPHABET, max_size=40), max_size=6), st.sampled_from(PREFIX_SETS))
def test_doc_counts_equal_python_on_generated_text(texts, prefixes):
    assert counted(texts, prefixes) == [expected(t, prefixes) for t in texts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=ASCII_ALPHABET, max_size=60), max_size=6), st.sampled_from(PREFIX_SETS))
def test_doc_counts_equal_python_on_generated_mostly_ascii_text(texts, prefixes):
    """Mostly ASCII words, spaces, dots, joiners and breaks: the kernel's fast paths and their
    hand-offs to the general path (one non-ASCII letter among them)."""
    assert counted(texts, prefixes) == [expected(t, prefixes) for t in texts]


@pytest.mark.parametrize(
    "overrides",
    [
        {"bullet_prefixes": ["->", "#", "•"], "min_alpha_words_ratio": None, "max_hash_word_ratio": None},
        {"bullet_prefixes": [], "max_bullet_lines_ratio": 0.0, "min_alpha_words_ratio": None},
        {"max_ellipsis_lines_ratio": 0.0, "min_alpha_words_ratio": None, "min_doc_words": None},
    ],
)
def test_filter_batch_with_kernel_counts_equals_the_list_path(overrides):
    docs = list(real_documents(15)) + CRAFTED + ["- item one\n- item two...\n" * 20, "the cat sat… " * 40]
    assert_filter_batch_equals_the_list_path(docs, HeuristicParams(**overrides))


def test_text_arrow_cannot_hold_takes_the_python_path():
    texts = ["fine text here", "lone \ud800 surrogate"]
    assert large_strings(texts) is None
    rows = batch_rows(large_strings(pd.Series(texts, dtype=object)), texts, HeuristicParams())
    assert [r.shape for r in rows] == [None, None]
    assert [r.words for r in rows] == [3, 2]


TIDY_CRAFTED = [
    *CRAFTED,
    "\r\r\n\r\x00\n x \u200b y\u00ad\ufeff",
    "  a \t\u00a0 b\u3000\u2000c \n \n\n \t \n\nd  ",
    "\x85\x1c\x1f start\u2028end \x0b\x0c",
    "a\u200b \u200b b",
    "\u202a\u2066bidi\u2069\u202e",
    "\n\n\n",
    "\t",
    # runs of bytes the pass copies, ended by the text, a space run, an invisible or a break
    "abc",
    "ab cd  ef\tgh \nij\u200bkl\r\nmn é op ",
]
TIDY_ALPHABET = "ab é😀\n\r\t\x00\x0b\x0c\x1c\x1f\x7f\x85\u00a0\u00ad\u200b\u2028\u3000\ufeff"


def python_tidy(text: str, invisible: bool, whitespace: bool) -> str:
    if invisible:
        text = normalize.strip_invisible(text)
    return normalize.normalize_whitespace(text) if whitespace else text


def re2_tidy(arr, invisible: bool, whitespace: bool):
    if invisible:
        arr = normalize.strip_invisible_batch(arr)
    return normalize.normalize_whitespace_batch(arr) if whitespace else arr


SWITCHES = [(True, True), (True, False), (False, True)]


@pytest.mark.parametrize(("invisible", "whitespace"), SWITCHES)
def test_tidy_equals_python_and_re2_on_real_and_crafted_text(invisible, whitespace):
    docs = list(real_documents()) + TIDY_CRAFTED
    arr = large_strings(docs)
    got = normalize.tidy_batch(arr, invisible, whitespace)
    assert got.to_pylist() == [python_tidy(t, invisible, whitespace) for t in docs]
    assert got.equals(re2_tidy(arr, invisible, whitespace))
    sliced = arr[len(docs) - 7 :]  # an array with an offset
    assert normalize.tidy_batch(sliced, invisible, whitespace).equals(re2_tidy(sliced, invisible, whitespace))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(alphabet=TIDY_ALPHABET, max_size=30), max_size=5), st.sampled_from(SWITCHES))
def test_tidy_equals_python_on_generated_text(texts, switches):
    got = normalize.tidy_batch(large_strings(texts), *switches).to_pylist()
    assert got == [python_tidy(t, *switches) for t in texts]


def test_ngram_char_counts_equal_the_numpy_reference():
    rng = np.random.default_rng(11)
    top_ns, dup_ns = [2, 3, 4], [5, 6, 7, 8, 9, 10]
    for _ in range(1500):
        m, k = int(rng.integers(1, 60)), int(rng.integers(1, 8))
        ids = rng.integers(0, k, size=m).astype(np.uint64)
        cum = np.concatenate([[0], np.cumsum(rng.integers(1, 9, size=m))]).astype(np.int64)
        hashes = ngram_hashes(ids, 10)
        tops, dups = ngram_char_counts(ids, cum, top_ns, dup_ns)
        assert tops == {n: top_ngram_chars(hashes[n], cum, n) for n in top_ns if len(hashes[n])}
        assert dups == {n: duplicate_ngram_chars(hashes[n], cum, n) for n in dup_ns if len(hashes[n])}


PROBE_SCRIPT = """
import sys
import numba
import numpy as np
import pyarrow as pa
from refinery.clean import normalize
from refinery.text.kernels import compiled

normalize.tidy_batch(pa.array(["a\\u200b  b"], pa.large_string()), True, True)
print("skipped", compiled.BLAS_PROBE_SKIPPED)
print("scipy_after_kernel", "scipy.linalg" in sys.modules)

@numba.njit
def dot(a, b):
    return np.dot(a, b)

@numba.njit
def correlate(a, b):
    return np.correlate(a, b)

a, b = np.arange(1.0, 6.0), np.arange(2.0, 7.0)
print("dot_ok", float(dot(a, b)) == float(np.dot(a, b)))
print("correlate_ok", np.array_equal(correlate(a, b[:3]), np.correlate(a, b[:3])))
print("scipy_after_dot", "scipy.linalg" in sys.modules)
"""


def test_kernels_load_without_scipy_and_numba_linear_algebra_still_compiles():
    """A fresh process runs a kernel without importing ``scipy.linalg`` (numba's import-time BLAS
    probe skipped: ``compiled.skip_blas_probe``), and numba code compiled after it still gets
    ``np.dot`` (which imports SciPy on its own first use) and ``np.correlate`` right."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", PROBE_SCRIPT], capture_output=True, text=True, check=True)
    lines = dict(line.split() for line in done.stdout.splitlines())
    assert lines == {
        "skipped": "True",
        "scipy_after_kernel": "False",
        "dot_ok": "True",
        "correlate_ok": "True",
        "scipy_after_dot": "True",
    }, done.stdout + done.stderr
