"""Unicode repair and whitespace cleanup.

ftfy undoes mojibake (UTF-8 read as Latin-1 and similar), straightens quotes and applies NFC, so
later rules (C4's terminal punctuation, dedup hashing) see one spelling of the same text.
Invisible characters that only hide differences (zero-width spaces, bidi overrides, soft
hyphens, stray C0/C1 controls) are removed; joiners that scripts need (ZWJ, ZWNJ) are kept.
"""

from __future__ import annotations

import re
import unicodedata

import ftfy

# C0/C1 controls except tab and newline, plus format characters that carry no text.
_INVISIBLE = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b\u2060-\u2064\u202a-\u202e\u2066-\u2069\ufeff]"
)
_SPACES = re.compile("[\t\u00a0\u1680\u2000-\u200a\u202f\u205f\u3000 ]+")
_LINE_EDGE_SPACES = re.compile(r" *\n *")
_BLANK_RUNS = re.compile(r"\n{3,}")
_FTFY_CONFIG = ftfy.TextFixerConfig(normalization="NFC")


def fix_unicode(text: str) -> str:
    """ftfy's repair, skipped where it cannot change anything.

    Mojibake, curly quotes, ligatures and width variants are all non-ASCII; in ASCII text ftfy only
    unescapes HTML entities (``&``), strips terminal escapes (``\x1b``) and normalizes ``\r``
    line breaks. Skipping the rest makes cleaning several times faster on English web text with
    identical output.
    """
    if text.isascii() and "&" not in text and "\x1b" not in text and "\r" not in text:
        return text
    return ftfy.fix_text(text, _FTFY_CONFIG)


def normalize_form(text: str, form: str) -> str:
    return text if form == "none" else unicodedata.normalize(form, text)


def strip_invisible(text: str) -> str:
    return _INVISIBLE.sub("", text.replace("\r\n", "\n").replace("\r", "\n"))


def normalize_whitespace(text: str) -> str:
    """One space between words, no spaces at line edges, at most one blank line in a row."""
    text = _SPACES.sub(" ", text)
    text = _LINE_EDGE_SPACES.sub("\n", text)
    return _BLANK_RUNS.sub("\n\n", text).strip()
