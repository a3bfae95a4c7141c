"""Gopher's stop-word rule: the one Gopher quality rule that assumes the language's own words."""

from __future__ import annotations

from typing import ClassVar

from refinery.filters.gopher_quality import GopherStopWordParams, gopher_stop_words
from refinery.filters.rule import Document, Rule, Verdict


class GopherStopWords(Rule):
    """At least ``min_stop_words`` distinct stop words; runs after the language gate, so a French
    page is rejected as not English rather than for lacking English stop words."""

    name = "gopher_stop_words"
    position = 400
    listed_at = 150  # beside Gopher quality, whose switch it shares
    params = GopherStopWordParams
    switch = "gopher_quality"
    int_scores = ("stop_word_count",)
    reasons: ClassVar = {"gopher_quality.few_stop_words": ("min_stop_words", None)}
    language_specific: ClassVar = {"min_stop_words": None}

    @staticmethod
    def check(doc: Document, p: GopherStopWordParams, scores: dict) -> Verdict:
        return gopher_stop_words(doc.words, p, scores)
