"""The one text normalization used to train and to query the language model and the classifier.

An n-gram model only means something when the text it scores is tokenized exactly as the text it
was trained on. Both ``reference_lm`` (writing the lmplz corpus) and ``perplexity_scored``
(querying) call :func:`normalize_line`, and the quality classifier hashes the same tokens, so a
change here changes every model's input at once (bump ``NORMALIZATION_VERSION``; the model
metadata records it and scoring refuses a model trained under another version).

The steps follow CCNet's ``text_normalizer.normalize`` (Wenzek et al., 2020), applied per line:

1. strip surrounding whitespace; lowercase;
2. strip accents: NFD, then drop combining marks (``café`` → ``cafe``);
3. every digit becomes ``0`` (``1984`` → ``0000``): numbers carry little about fluency and would
   otherwise explode the vocabulary;
4. Unicode punctuation is mapped to its ASCII counterpart (``“ ” « »`` → ``"``, ``–`` → ``-``,
   ``。`` → ``.``, full-width forms), as CCNet's ``replace_unicode_punct``;
5. non-printing characters (C0/C1 controls) are removed;
6. tokenization: CCNet runs SentencePiece here; we ship no SentencePiece model, so every character
   that is neither a word character nor whitespace becomes a token of its own (``end.`` →
   ``end .``, ``don't`` → ``don ' t``), and runs of whitespace collapse to one space.

KenLM's reserved words ``<s>``, ``</s>`` and ``<unk>`` can therefore never appear in the output
(``<`` and ``>`` are split off), so user text cannot confuse lmplz or the query.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Iterator

NORMALIZATION_VERSION = "ccnet-words-1"

# CCNet's replace_unicode_punct table, plus the dashes and quotes common in web text.
UNICODE_PUNCT = {
    "，": ",",
    "。": ".",
    "、": ",",
    "„": '"',
    "”": '"',
    "“": '"',
    "«": '"',
    "»": '"',
    "」": '"',
    "「": '"',
    "《": '"',
    "》": '"',
    "´": "'",
    "∶": ":",
    "：": ":",
    "？": "?",
    "！": "!",
    "（": "(",
    "）": ")",
    "；": ";",
    "–": "-",
    "—": " - ",
    "．": ". ",
    "～": "~",
    "’": "'",
    "‘": "'",
    "…": "...",
    "━": "-",
    "〈": "<",
    "〉": ">",
    "【": "[",
    "】": "]",
    "％": "%",
    "►": "-",
}
_PUNCT_TABLE = str.maketrans(UNICODE_PUNCT)
# C0 and C1 control characters (tab and newline are whitespace and handled by the split).
_NON_PRINTING = str.maketrans({c: None for c in [*range(0, 9), *range(11, 32), *range(127, 160)]})
_DIGIT = re.compile(r"\d")
_SPLIT_PUNCT = re.compile(r"([^\w\s])")
# The same split for ASCII lines as one translate: after _NON_PRINTING only tab, newline and
# printable ASCII are left, where [^\w\s] is string.punctuation less '_'. (re.sub with a
# template expands it per match: on real text that was a third of the scoring time.)
_SPLIT_ASCII_PUNCT = str.maketrans({c: f" {c} " for c in string.punctuation if c != "_"})


def _strip_accents(line: str) -> str:
    decomposed = unicodedata.normalize("NFD", line)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn")


def normalize_line(line: str) -> str:
    """One line of text as the space-separated tokens the models see ('' when nothing is left)."""
    line = line.strip().lower()
    if not line:
        return ""
    if not line.isascii():
        line = _strip_accents(line).translate(_PUNCT_TABLE)
    line = _DIGIT.sub("0", line)
    line = line.translate(_NON_PRINTING)
    line = line.translate(_SPLIT_ASCII_PUNCT) if line.isascii() else _SPLIT_PUNCT.sub(r" \1 ", line)
    return " ".join(line.split())


def normalized_lines(text: str) -> Iterator[str]:
    """The non-empty normalized lines (paragraphs) of a document, in order.

    Lines are CCNet's unit: the language model scores each one as a sentence with begin and end
    markers, and ``lmplz`` is trained on one line per line.
    """
    for raw in text.splitlines():
        line = normalize_line(raw)
        if line:
            yield line


def normalized_tokens(text: str) -> list[str]:
    """Every token of the document in order, across lines (the classifier's input)."""
    tokens: list[str] = []
    for line in normalized_lines(text):
        tokens.extend(line.split(" "))
    return tokens
