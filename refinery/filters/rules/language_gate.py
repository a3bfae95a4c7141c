"""The language gate: the rule set's English assumption, made explicit before the English rules."""

from __future__ import annotations

from typing import ClassVar

from refinery.filters.language import LanguageGateParams, language_gate
from refinery.filters.rule import Document, Rule, Verdict


class LanguageGate(Rule):
    """Rejects documents under ``min_english_word_fraction`` English function words as
    ``language.not_english``, after the rules that hold in any language and before those that don't."""

    name = "language"
    position = 300
    listed_at = 50  # its parameters and english_word_fraction come first, as in every release so far
    params = LanguageGateParams
    switch = "language_gate"
    float_scores = ("english_word_fraction",)
    reasons: ClassVar = {"language.not_english": ("language_gate", False)}
    language_specific: ClassVar = {"language_gate": False}

    @staticmethod
    def check(doc: Document, p: LanguageGateParams, scores: dict) -> Verdict:
        return language_gate(doc.words, p, scores)
