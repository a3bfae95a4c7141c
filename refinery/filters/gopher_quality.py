"""Gopher quality rules (Rae et al. 2021, appendix A), on pre-split tokens.

The stop-word rule is separate because it is the one that assumes English: the chain runs it
after the language gate, so a French page is rejected as not English rather than for lacking
English stop words.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import repeat
from operator import gt, lt

import numpy as np
from pydantic import BaseModel, Field, field_validator

from refinery.filters.rule import BatchChecks
from refinery.text.english import GOPHER_STOP_WORDS
from refinery.text.kernels.doc_counts import BatchCounts
from refinery.text.word_counts import DocShape, letter_word_count

_ELLIPSES = ("...", "…")

Verdict = tuple[str, str] | None


class GopherQualityParams(BaseModel):
    """Gopher's quality thresholds (the stop-word rule has its own, :class:`GopherStopWordParams`)."""

    gopher_quality: bool = Field(True, description="Run Gopher's quality rules and its stop-word rule.")
    min_doc_words: int | None = Field(50, description="Fewer words: short_doc (null: off).")
    max_doc_words: int | None = Field(100_000, description="More words: long_doc (null: off).")
    min_avg_word_length: float | None = Field(3, description="Mean word length in characters, at least.")
    max_avg_word_length: float | None = Field(10, description="Mean word length in characters, at most.")
    max_hash_word_ratio: float | None = Field(0.1, description="'#' characters per token.")
    max_ellipsis_word_ratio: float | None = Field(0.1, description="Ellipses per token.")
    max_bullet_lines_ratio: float | None = Field(
        0.9, description="Share of lines that start with a bullet prefix, at most."
    )
    max_ellipsis_lines_ratio: float | None = Field(
        0.3, description="Share of lines that end in an ellipsis, at most."
    )
    min_alpha_words_ratio: float | None = Field(0.8, description="Tokens with a letter / all tokens.")
    bullet_prefixes: list[str] = Field(
        ["•", "-", "*", "·"], description="What starts a bullet line (max_bullet_lines_ratio)."
    )


class GopherStopWordParams(BaseModel):
    """Gopher's stop-word rule; it runs under the ``gopher_quality`` switch."""

    min_stop_words: int | None = Field(2, description="Distinct stop words a document holds, at least.")
    stop_words: list[str] = Field(
        list(GOPHER_STOP_WORDS), description="The stop words min_stop_words counts (lowercased)."
    )

    @field_validator("stop_words")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [w.lower() for w in value]


def gopher_quality(text: str, n_tokens: int, wrds: list[str], p: GopherQualityParams, out: dict) -> Verdict:
    """Fill ``out`` with the scores; return the first failed rule as (code, detail). ``n_tokens`` is
    ``len(tokens(text))`` (the chain counts it without building the list)."""
    return gopher_quality_counts(
        text, n_tokens, len(wrds), sum(map(len, wrds)), letter_word_count(wrds), p, out
    )


def gopher_quality_counts(
    text: str,
    n_tokens: int,
    n_words: int,
    word_length: int,
    letter_words: int,
    p: GopherQualityParams,
    out: dict,
    shape: DocShape | None = None,
) -> Verdict:
    """:func:`gopher_quality` from the counts of the document's words (how many, their total
    length, how many hold a letter) instead of their list: the chain has them for a whole batch
    from :func:`refinery.text.word_counts.word_counts`, without listing any word. ``shape``: the
    text's '#', ellipsis and line counts from the compiled batch pass
    (:mod:`refinery.text.kernels.doc_counts`); used when counted with these bullet prefixes,
    else counted here from the text (the same numbers)."""
    if shape is not None and shape.bullet_prefixes != tuple(p.bullet_prefixes):
        shape = None
    n_tokens = n_tokens or 1
    out["word_count"] = n_words
    if p.min_doc_words is not None and n_words < p.min_doc_words:
        return "gopher_quality.short_doc", f"{n_words} words < {p.min_doc_words}"
    if p.max_doc_words is not None and n_words > p.max_doc_words:
        return "gopher_quality.long_doc", f"{n_words} words > {p.max_doc_words}"

    mean_len = word_length / n_words if n_words else 0.0
    out["mean_word_length"] = mean_len
    if p.min_avg_word_length is not None and mean_len < p.min_avg_word_length:
        return "gopher_quality.mean_word_length_low", f"{mean_len:.2f} < {p.min_avg_word_length}"
    if p.max_avg_word_length is not None and mean_len > p.max_avg_word_length:
        return "gopher_quality.mean_word_length_high", f"{mean_len:.2f} > {p.max_avg_word_length}"

    if shape is None:
        hash_ratio = text.count("#") / n_tokens
        ellipsis_ratio = (text.count("...") + text.count("…")) / n_tokens
    else:
        hash_ratio, ellipsis_ratio = shape.hashes / n_tokens, shape.ellipses / n_tokens
    out["hash_ratio"], out["ellipsis_ratio"] = hash_ratio, ellipsis_ratio
    if p.max_hash_word_ratio is not None and hash_ratio > p.max_hash_word_ratio:
        return "gopher_quality.too_many_hashes", f"{hash_ratio:.3f} '#' per token > {p.max_hash_word_ratio}"
    if p.max_ellipsis_word_ratio is not None and ellipsis_ratio > p.max_ellipsis_word_ratio:
        return (
            "gopher_quality.too_many_ellipsis",
            f"{ellipsis_ratio:.3f} per token > {p.max_ellipsis_word_ratio}",
        )

    if shape is None:
        bullet, ellipsis_lines = _line_shares(text, tuple(p.bullet_prefixes), ellipsis_ratio)
    else:
        bullet, ellipsis_lines = shape.bullet_lines / shape.lines, shape.ellipsis_lines / shape.lines
    out["bullet_lines_ratio"], out["ellipsis_lines_ratio"] = bullet, ellipsis_lines
    if p.max_bullet_lines_ratio is not None and bullet > p.max_bullet_lines_ratio:
        return "gopher_quality.too_many_bullets", f"{bullet:.2f} of lines > {p.max_bullet_lines_ratio}"
    if p.max_ellipsis_lines_ratio is not None and ellipsis_lines > p.max_ellipsis_lines_ratio:
        return (
            "gopher_quality.too_many_end_ellipsis",
            f"{ellipsis_lines:.2f} of lines > {p.max_ellipsis_lines_ratio}",
        )

    # words with a letter: all-letter ones and mixed ones ("don't", "mp3")
    alpha_ratio = letter_words / n_tokens
    out["alpha_words_ratio"] = alpha_ratio
    if p.min_alpha_words_ratio is not None and alpha_ratio < p.min_alpha_words_ratio:
        return "gopher_quality.low_alpha_words", f"{alpha_ratio:.2f} < {p.min_alpha_words_ratio}"
    return None


def _line_shares(text: str, prefixes: tuple[str, ...], ellipsis_ratio: float) -> tuple[float, float]:
    """Shares of the text's lines that start with a bullet prefix and end in an ellipsis (stripped)."""
    lines = text.splitlines() or [text]
    # map() over C methods instead of a generator: the same counts, no Python frame per line. A
    # line can only start with a prefix the text holds, and only end in an ellipsis the text
    # holds (counted before): where there is none, no line is walked and the share is 0.0.
    bullet = ellipsis_lines = 0.0
    if any(prefix in text for prefix in prefixes):
        bullet = sum(map(str.startswith, map(str.lstrip, lines), repeat(prefixes))) / len(lines)
    if ellipsis_ratio:
        ellipsis_lines = sum(map(str.endswith, map(str.rstrip, lines), repeat(_ELLIPSES))) / len(lines)
    return bullet, ellipsis_lines


def gopher_stop_words(wrds: list[str], p: GopherStopWordParams, out: dict) -> Verdict:
    """Gopher's stop-word rule: the one quality rule that assumes English."""
    stop_words = len(set(map(str.lower, set(wrds))).intersection(p.stop_words))
    out["stop_word_count"] = stop_words
    if p.min_stop_words is not None and stop_words < p.min_stop_words:
        return "gopher_quality.few_stop_words", f"{stop_words} distinct stop words < {p.min_stop_words}"
    return None


def gopher_quality_batch(counts: BatchCounts, p: GopherQualityParams) -> BatchChecks:
    """:func:`gopher_quality_counts` of every document of a batch at once, from the compiled pass's
    counts (counted with ``p.bullet_prefixes``): the same checks in the same order, the same float64
    arithmetic (int64 counts, exact in float64, divided once: the correctly rounded quotient, as
    Python's ``int / int``), each score set only for the documents that reached its check, and the
    detail strings formatted only for the rejected documents. Most documents of real corpora fail
    here, so the chain then runs the per-document rules only on the rest."""
    if counts.bullet_prefixes != tuple(p.bullet_prefixes):
        raise ValueError(f"counted with bullet prefixes {counts.bullet_prefixes}, not {p.bullet_prefixes}")
    c = counts.column
    words, lines = c("words"), c("lines")
    n_tokens = counts.tokens()
    n_tokens[n_tokens == 0] = 1  # `n_tokens or 1`
    run = _ChecksRun(len(words))
    run.score("word_count", words)
    run.check("gopher_quality.short_doc", words, lt, p.min_doc_words, "{} words < {}")
    run.check("gopher_quality.long_doc", words, gt, p.max_doc_words, "{} words > {}")
    mean_len = np.divide(c("word_length"), words, out=np.zeros(len(words)), where=words != 0)
    run.score("mean_word_length", mean_len)
    run.check("gopher_quality.mean_word_length_low", mean_len, lt, p.min_avg_word_length, "{:.2f} < {}")
    run.check("gopher_quality.mean_word_length_high", mean_len, gt, p.max_avg_word_length, "{:.2f} > {}")
    hashes, ellipses = c("hashes") / n_tokens, c("ellipses") / n_tokens
    run.score("hash_ratio", hashes)
    run.score("ellipsis_ratio", ellipses)
    hash_max, ellipsis_max = p.max_hash_word_ratio, p.max_ellipsis_word_ratio
    run.check("gopher_quality.too_many_hashes", hashes, gt, hash_max, "{:.3f} '#' per token > {}")
    run.check("gopher_quality.too_many_ellipsis", ellipses, gt, ellipsis_max, "{:.3f} per token > {}")
    bullets, end_ellipses = c("bullet_lines") / lines, c("ellipsis_lines") / lines
    run.score("bullet_lines_ratio", bullets)
    run.score("ellipsis_lines_ratio", end_ellipses)
    bullet_max, end_max = p.max_bullet_lines_ratio, p.max_ellipsis_lines_ratio
    run.check("gopher_quality.too_many_bullets", bullets, gt, bullet_max, "{:.2f} of lines > {}")
    run.check("gopher_quality.too_many_end_ellipsis", end_ellipses, gt, end_max, "{:.2f} of lines > {}")
    alpha = c("letter_words") / n_tokens
    run.score("alpha_words_ratio", alpha)
    run.check("gopher_quality.low_alpha_words", alpha, lt, p.min_alpha_words_ratio, "{:.2f} < {}")
    return BatchChecks(run.verdicts, run.pending, run.scores)


class _ChecksRun:
    """The documents of a batch going through a rule's checks in order: ``pending`` holds those
    that no check has failed yet; a score is set, and a failure recorded, for those only."""

    def __init__(self, n: int):
        self.pending = np.ones(n, dtype=bool)
        self.verdicts: list[Verdict] = [None] * n
        self.scores: dict[str, np.ndarray] = {}

    def score(self, name: str, values: np.ndarray) -> None:
        self.scores[name] = np.where(self.pending, values, np.nan)

    def check(self, code: str, values: np.ndarray, fails: Callable, limit: object, detail: str) -> None:
        """Reject the pending documents whose value ``fails`` against ``limit`` (None: the check is
        off), each with ``detail`` formatted from its value (as a Python number: the same text as
        the per-document f-string) and ``limit``."""
        if limit is None:
            return
        rows = np.flatnonzero(self.pending & fails(values, limit))
        self.pending[rows] = False
        for row, value in zip(rows.tolist(), values[rows].tolist(), strict=True):
            self.verdicts[row] = (code, detail.format(value, limit))
