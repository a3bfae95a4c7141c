"""A cheap language gate: the share of English function words among a document's words.

English prose runs at 30–50 % function words from this list; other Latin-script languages
stay in the low single digits and non-Latin scripts at zero, so a threshold of 10 % separates
them without a model. It exists to make the rule set's English assumption explicit.
"""

from __future__ import annotations

from pydantic import Field

from refinery.filters.rule import ChainParams
from refinery.text.english import ENGLISH_FUNCTION_WORDS

Verdict = tuple[str, str] | None


class LanguageGateParams(ChainParams):
    """The function-word gate in front of the English rules: it checks the chain's ``language``."""

    language_gate: bool = Field(True, description="Reject documents that are not in `language`.")
    min_english_word_fraction: float | None = Field(
        0.10, description="Share of English function words below which a document is not English."
    )
    language_gate_min_words: int = Field(20, description="Shorter documents skip the gate.")

    def assumptions(self) -> str:
        """A sentence for the UI: what the rule set takes for granted."""
        gate = (
            f"non-{self.language} documents are rejected as language.not_{'english'} when under "
            f"{self.min_english_word_fraction:.0%} English function words"
            if self.language_gate and self.min_english_word_fraction is not None
            else "no language gate: English-only rules (stop words, sentences) apply to every document"
        )
        return f"Rule set assumes language '{self.language}'; {gate}."


def english_word_fraction(wrds: list[str]) -> float:
    if not wrds:
        return 0.0
    return sum(map(ENGLISH_FUNCTION_WORDS.__contains__, map(str.lower, wrds))) / len(wrds)


def language_gate(wrds: list[str], p: LanguageGateParams, out: dict) -> Verdict:
    fraction = english_word_fraction(wrds)
    out["english_word_fraction"] = fraction
    if p.language != "en":
        raise ValueError(f"only the English rule set ships (language='en'); got language={p.language!r}")
    if p.min_english_word_fraction is None or len(wrds) < p.language_gate_min_words:
        return None
    if fraction < p.min_english_word_fraction:
        return (
            "language.not_english",
            f"{fraction:.1%} English function words < {p.min_english_word_fraction:.0%}; "
            "the rule set assumes 'en'",
        )
    return None


# -- lingua-based gate --------------------------------------------------------------------------
# Replaces the function-word share above once ``language``/``language_score`` columns exist
# (``refinery.text.language_id.label_batch``). Defaults: the rule set's language only, and a
# score that keeps 99.9 % of correctly labelled pages and 99.4 % of correctly labelled paragraphs
# in lingua's low-accuracy mode, the labelling default (docs/language.md). Scores are on another
# scale in high-accuracy mode: there 0.5 keeps 99.5 % / 97.6 %.
DEFAULT_LANGUAGES = ("en",)
DEFAULT_MIN_LANGUAGE_SCORE = 0.65


def lingua_language_gate(
    language: str | None,
    score: float | None,
    languages: list[str] | tuple[str, ...] | None = DEFAULT_LANGUAGES,
    min_language_score: float | None = DEFAULT_MIN_LANGUAGE_SCORE,
) -> Verdict:
    """Gate one document on its lingua label: (reason, detail) or None to keep it.

    ``language.unknown``: lingua found no language (no letters); ``language.not_allowed``: the
    label is not in ``languages`` (None allows every language); ``language.low_score``: the
    label is allowed but lingua's confidence is under ``min_language_score`` (None: no minimum).
    """
    if language is None or language == "unknown" or score is None or score != score:  # NaN
        return "language.unknown", "no language detected (no letters, or not labelled)"
    if languages is not None and language not in languages:
        return (
            "language.not_allowed",
            f"{language} (score {score:.2f}) not in languages {sorted(languages)}",
        )
    if min_language_score is not None and score < min_language_score:
        return (
            "language.low_score",
            f"{language} score {score:.2f} < min_language_score {min_language_score}",
        )
    return None


def lingua_gate_batch(
    frame,
    languages: list[str] | tuple[str, ...] | None = DEFAULT_LANGUAGES,
    min_language_score: float | None = DEFAULT_MIN_LANGUAGE_SCORE,
) -> list[Verdict]:
    """:func:`lingua_language_gate` for every row of a frame with ``language``/``language_score``."""
    missing = {"language", "language_score"} - set(frame.columns)
    if missing:
        raise ValueError(
            f"the lingua gate needs the columns {sorted(missing)}: label the batch first "
            "(refinery.text.language_id.label_batch)"
        )
    allowed = None if languages is None else frozenset(languages)
    return [
        lingua_language_gate(lang, float(score) if score is not None else None, allowed, min_language_score)
        for lang, score in zip(frame["language"].tolist(), frame["language_score"].tolist(), strict=True)
    ]
