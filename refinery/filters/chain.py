"""The heuristic rule chain, language-agnostic rules first, then the English ones.

Order: Gopher quality (shape: length, word length, symbols, bullets, ellipses, alphabetic
words) → Gopher repetition → language gate → Gopher stop words → C4. Rules that hold in any
language decide first, so spam is rejected for what it is; the gate then makes the English
assumption explicit before the rules that depend on it.

The first failed rule names the rejection. Scores of every family that ran are kept as columns
(so kept documents carry all of them, and SQL can slice any threshold afterwards); families
after the failing one did not run, and their columns are null for that row.
"""

from __future__ import annotations

import math

import pandas as pd
import pyarrow as pa

from refinery.batch import BatchResult, split_batch
from refinery.filters.c4 import c4_rules
from refinery.filters.gopher_quality import gopher_quality, gopher_stop_words
from refinery.filters.gopher_repetition import gopher_repetition
from refinery.filters.language import language_gate
from refinery.filters.params import HeuristicParams
from refinery.text.words import char_class_counts, token_count, tokens, word_tokens, words

INT_SCORES = ["word_count", "stop_word_count", "c4_lines_removed", "c4_sentences", "c4_badwords_count"]
FLOAT_SCORES = [
    "english_word_fraction",
    "mean_word_length",
    "hash_ratio",
    "ellipsis_ratio",
    "bullet_lines_ratio",
    "ellipsis_lines_ratio",
    "alpha_words_ratio",
    "dup_para_frac",
    "dup_para_char_frac",
    "dup_line_frac",
    "dup_line_char_frac",
    *[f"top_{n}gram_char_frac" for n in (2, 3, 4)],
    *[f"dup_{n}gram_char_frac" for n in range(5, 11)],
]
SCORE_FIELDS = [pa.field(c, pa.int32()) for c in INT_SCORES] + [
    pa.field(c, pa.float32()) for c in FLOAT_SCORES
]


def evaluate(
    text: str, p: HeuristicParams, char_counts: tuple[int, int] | None = None
) -> tuple[tuple[str, str] | None, dict, str]:
    """Run the chain on one document: (first failure or None, scores, text to keep).

    ``char_counts``: the text's (word characters, other non-space characters), as
    :func:`char_class_counts` gives them for a batch. A document heavy in symbols (code, man pages,
    tables: likely to fail Gopher's alphabetic-token share) then has its tokens counted from them
    and its words instead of listed, and the list is built only if the repetition rules run. The
    results are the same either way; only the work differs."""
    scores: dict = {}
    toks: list[str] | None = None
    if char_counts is not None and _symbol_heavy(*char_counts):
        # Likely to fail on its share of alphabetic tokens: count tokens, do not list them.
        wrds = words(text)
        n_tokens = token_count(wrds, *char_counts)
    else:
        toks = tokens(text)
        wrds = word_tokens(toks)
        n_tokens = len(toks)
    if p.gopher_quality and (v := gopher_quality(text, n_tokens, wrds, p, scores)):
        return v, scores, text
    if p.gopher_repetition and (
        v := gopher_repetition(text, tokens(text) if toks is None else toks, p, scores)
    ):
        return v, scores, text
    if p.language_gate and (v := language_gate(wrds, p, scores)):
        return v, scores, text
    if p.gopher_quality and (v := gopher_stop_words(wrds, p, scores)):
        return v, scores, text
    if p.c4:
        v, new_text = c4_rules(text, p, scores)
        if v:
            return v, scores, text
        text = new_text
    return None, scores, text


def _symbol_heavy(word_chars: int, other_chars: int) -> bool:
    """Estimated share of symbol tokens above 15 % (words taken as five characters long)."""
    return other_chars > 0.15 * (other_chars + word_chars / 5)


def filter_batch(frame: pd.DataFrame, params: HeuristicParams) -> BatchResult:
    """The heuristic_filtered processor: :func:`evaluate` on every document of the batch (the
    asset binds ``params=`` by keyword)."""
    p = params
    reasons, kept_texts = [], []
    columns: dict[str, list] = {c: [] for c in INT_SCORES + FLOAT_SCORES}
    texts = frame["text"].tolist()
    word_chars, other_chars = char_class_counts(texts)
    for text, w, o in zip(texts, word_chars.tolist(), other_chars.tolist(), strict=True):
        verdict, scores, kept_text = evaluate(text, p, (w, o))
        reasons.append(verdict)
        kept_texts.append(kept_text)
        for name, values in columns.items():
            values.append(scores.get(name, math.nan))
    out = frame.assign(text=kept_texts, **columns)
    for name in INT_SCORES:
        out[name] = out[name].astype("Int32")
    return split_batch(out, reasons)
