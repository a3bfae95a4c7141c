"""Gopher quality (Rae et al. 2021, appendix A): the shape of a document, in any language."""

from __future__ import annotations

from typing import ClassVar

from refinery.filters.gopher_quality import GopherQualityParams, gopher_quality_batch, gopher_quality_counts
from refinery.filters.rule import Document, Rule, Verdict


class GopherQuality(Rule):
    """Length, word length, '#' and ellipses per token, bullet and ellipsis lines, alphabetic tokens."""

    name = "gopher_quality"
    position = 100
    params = GopherQualityParams
    switch = "gopher_quality"
    int_scores = ("word_count",)
    float_scores = (
        "mean_word_length",
        "hash_ratio",
        "ellipsis_ratio",
        "bullet_lines_ratio",
        "ellipsis_lines_ratio",
        "alpha_words_ratio",
    )
    reasons: ClassVar = {
        "gopher_quality.short_doc": ("min_doc_words", None),
        "gopher_quality.long_doc": ("max_doc_words", None),
        "gopher_quality.mean_word_length_low": ("min_avg_word_length", None),
        "gopher_quality.mean_word_length_high": ("max_avg_word_length", None),
        "gopher_quality.too_many_hashes": ("max_hash_word_ratio", None),
        "gopher_quality.too_many_ellipsis": ("max_ellipsis_word_ratio", None),
        "gopher_quality.too_many_bullets": ("max_bullet_lines_ratio", None),
        "gopher_quality.too_many_end_ellipsis": ("max_ellipsis_lines_ratio", None),
        "gopher_quality.low_alpha_words": ("min_alpha_words_ratio", None),
    }
    counts_words: ClassVar = {
        "min_doc_words": None,
        "max_doc_words": None,
        "min_avg_word_length": None,
        "max_avg_word_length": None,
        "max_hash_word_ratio": None,
        "max_ellipsis_word_ratio": None,
        "min_alpha_words_ratio": None,
    }
    # the whole batch from the compiled pass's counts (most documents of real corpora fail here)
    check_batch = staticmethod(gopher_quality_batch)

    @staticmethod
    def check(doc: Document, p: GopherQualityParams, scores: dict) -> Verdict:
        return gopher_quality_counts(doc.text, doc.n_tokens, *doc.word_stats(), p, scores, doc.shape)
