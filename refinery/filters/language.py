"""A cheap language gate: the share of English function words among a document's words.

English prose runs at 30–50 % function words from this list; other Latin-script languages
stay in the low single digits and non-Latin scripts at zero, so a threshold of 10 % separates
them without a model. It exists to make the rule set's English assumption explicit.
"""

from __future__ import annotations

from refinery.filters.params import HeuristicParams
from refinery.text.english import ENGLISH_FUNCTION_WORDS

Verdict = tuple[str, str] | None


def english_word_fraction(wrds: list[str]) -> float:
    if not wrds:
        return 0.0
    return sum(map(ENGLISH_FUNCTION_WORDS.__contains__, map(str.lower, wrds))) / len(wrds)


def language_gate(wrds: list[str], p: HeuristicParams, out: dict) -> Verdict:
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
