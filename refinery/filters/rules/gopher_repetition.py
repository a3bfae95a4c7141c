"""Gopher repetition (Rae et al. 2021, table A1): duplicate paragraphs, lines and n-grams."""

from __future__ import annotations

from typing import ClassVar

from refinery.filters.gopher_repetition import GopherRepetitionParams, gopher_repetition
from refinery.filters.rule import Document, Rule, Verdict


class GopherRepetition(Rule):
    """Repeated paragraphs and lines, the most frequent 2–4-grams, repeated 5–10-grams."""

    name = "gopher_repetition"
    position = 200
    params = GopherRepetitionParams
    switch = "gopher_repetition"
    float_scores = (
        "dup_para_frac",
        "dup_para_char_frac",
        "dup_line_frac",
        "dup_line_char_frac",
        *[f"top_{n}gram_char_frac" for n in (2, 3, 4)],
        *[f"dup_{n}gram_char_frac" for n in range(5, 11)],
    )
    reasons: ClassVar = {
        "gopher_repetition.dup_para_frac": ("max_dup_para_frac", None),
        "gopher_repetition.dup_para_char_frac": ("max_dup_para_char_frac", None),
        "gopher_repetition.dup_line_frac": ("max_dup_line_frac", None),
        "gopher_repetition.dup_line_char_frac": ("max_dup_line_char_frac", None),
        **{f"gopher_repetition.top_{n}gram": (f"max_top_{n}gram_char_frac", None) for n in (2, 3, 4)},
        **{f"gopher_repetition.dup_{n}gram": (f"max_dup_{n}gram_char_frac", None) for n in range(5, 11)},
    }
    # n-grams are word n-grams: without spaces between words there are none to count
    counts_words: ClassVar = {
        **{f"max_top_{n}gram_char_frac": None for n in (2, 3, 4)},
        **{f"max_dup_{n}gram_char_frac": None for n in range(5, 11)},
    }

    @staticmethod
    def check(doc: Document, p: GopherRepetitionParams, scores: dict) -> Verdict:
        return gopher_repetition(doc.text, doc.tokens, p, scores)
