"""Unicode repair and whitespace cleanup.

ftfy undoes mojibake (UTF-8 read as Latin-1 and similar), straightens quotes and applies NFC, so
later rules (C4's terminal punctuation, dedup hashing) see one spelling of the same text.
Invisible characters that only hide differences (zero-width spaces, bidi overrides, soft
hyphens, stray C0/C1 controls) are removed; joiners that scripts need (ZWJ, ZWNJ) are kept.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.clean.ftfy_gate import (
    FTFY_CONFIG,
    PY_WHITESPACE,
    fix_text_one,
    fix_texts,
    re2_class,
    regex_class_chars,
)
from refinery.text.kernels import tidy as tidy_kernel
from refinery.text.kernels.tables import bits_table, chars_table, class_table, stored

# C0/C1 controls except tab and newline, plus format characters that carry no text.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060-\u2064\u202a-\u202e\u2066-\u2069\ufeff]"
)
_SPACES = re.compile("[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000 ]+")
_LINE_EDGE_SPACES = re.compile(r" *\n *")
_BLANK_RUNS = re.compile(r"\n{3,}")
_FTFY_CONFIG = FTFY_CONFIG  # ftfy's default configuration (NFC); the reference the tests compare with
# The same steps as RE2 patterns over a whole batch (pyarrow.compute), for clean_batch.
_INVISIBLE_RE2 = re2_class(regex_class_chars(_INVISIBLE))
_SPACE_CHARS = regex_class_chars(re.compile(_SPACES.pattern.removesuffix("+")))
# Runs of _SPACES other than a lone " " (which it replaces by itself): fewer, longer matches.
_SPACES_RE2 = f"{re2_class(_SPACE_CHARS)}{{2,}}|{re2_class(_SPACE_CHARS - {0x20})}"
_PY_WHITESPACE = "".join(map(chr, PY_WHITESPACE))  # what str.strip removes


def fix_unicode(text: str) -> str:
    """ftfy's repair (``ftfy.fix_text`` with its defaults), skipped where it cannot change anything:
    see :mod:`refinery.clean.ftfy_gate` for the pre-check and why it is exact."""
    return fix_text_one(text)


def fix_unicode_batch(texts: list[str], arr: pa.Array | None = None) -> list[str]:
    """:func:`fix_unicode` over a batch: one vectorized pre-check, ftfy only where it may act
    (``arr``: the same strings in Arrow, when the caller has them)."""
    return fix_texts(texts, arr)


def normalize_form(text: str, form: str) -> str:
    return text if form == "none" else unicodedata.normalize(form, text)


def normalize_forms(texts: list[str], form: str, repaired: bool = False) -> list[str]:
    """:func:`normalize_form` of each text (ASCII is in every form). ``repaired``: the texts came
    out of :func:`fix_unicode_batch`, whose output shorter than ftfy's ``max_decode_length`` is
    already NFC (ftfy ends each segment's every pass with NFC, a segment is cut after a ``\n``,
    which composes with nothing, and the gate returns a text unchanged only when it is NFC): then
    NFC is not computed again for those (``tests/unit/test_ftfy_gate.py`` checks the output is NFC)."""
    if form == "none":
        return texts
    limit = FTFY_CONFIG.max_decode_length if repaired and form == "NFC" else 0
    return [t if t.isascii() or len(t) < limit else unicodedata.normalize(form, t) for t in texts]


def strip_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_whitespace(text: str) -> str:
    """One space between words, no spaces at line edges, at most one blank line in a row."""
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGE_SPACES.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()


def strip_invisible_batch(arr: pa.Array) -> pa.Array:
    """:func:`strip_invisible` on every string of an Arrow array, in RE2. The same result: ``\r\n?``
    pairs each CR with a following LF exactly as the two ``str.replace`` calls do, and the class is
    ``_INVISIBLE``'s."""
    return pc.replace_substring_regex(pc.replace_substring_regex(arr, "\r\n?", "\n"), _INVISIBLE_RE2, "")


def normalize_whitespace_batch(arr: pa.Array) -> pa.Array:
    """:func:`normalize_whitespace` on every string of an Arrow array: the same three substitutions
    in RE2, each written to skip the matches that replace a text by itself (a lone space, a newline
    without spaces around it), then trimming exactly the characters ``str.strip`` removes."""
    arr = pc.replace_substring_regex(arr, _SPACES_RE2, " ")
    arr = pc.replace_substring_regex(arr, " +\n *|\n +", "\n")  # " *\n *" where it is not "\n" alone
    arr = pc.replace_substring_regex(arr, "\n{3,}", "\n\n")
    return pc.utf8_trim(arr, characters=_PY_WHITESPACE)


def tidy_batch(arr: pa.Array, strip_invisible: bool, normalize_whitespace: bool) -> pa.Array:
    """:func:`strip_invisible_batch` then :func:`normalize_whitespace_batch` (each when switched on)
    in one compiled pass over the array's UTF-8 (:mod:`refinery.text.kernels.tidy`): the same
    strings, with the classes taken from this module's regexes."""
    if not (strip_invisible or normalize_whitespace):
        return arr
    return tidy_kernel.tidy_batch(arr, _tidy_table(), strip_invisible, normalize_whitespace)


@cache
def _tidy_table() -> np.ndarray:
    """Per code point: INVISIBLE (``_INVISIBLE``), SPACES (``_SPACES``' class), TRIM (``str.strip``'s)."""
    spaces = re.compile(_SPACES.pattern.removesuffix("+"))
    return stored(
        "tidy",
        repr((_INVISIBLE.pattern, spaces.pattern, _PY_WHITESPACE)),
        lambda: bits_table(
            [
                (class_table(_INVISIBLE), tidy_kernel.INVISIBLE),
                (class_table(spaces), tidy_kernel.SPACES),
                (chars_table(_PY_WHITESPACE), tidy_kernel.TRIM),
            ]
        ),
    )
