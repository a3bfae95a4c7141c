"""Every threshold of the heuristic rule set, with the published values as defaults.

Gopher: Rae et al. 2021, "Scaling Language Models", appendix A (quality filter and table A1).
C4: Raffel et al. 2020, section 2.2, as implemented in TensorFlow Datasets' ``c4_utils``.
Any threshold set to ``None`` switches its rule off; ``disabled_rules`` switches rules off by
their reason code; each family has a master switch.

The rule set assumes English (``language='en'``): Gopher's stop words and C4's sentence and
policy rules are English. Non-English documents are not failed silently by those rules: the
chain runs the language-agnostic rules first, then a language gate that rejects other
languages with reason ``language.not_english`` and the measured share of English function
words, then the English rules. A user sees why, and can turn the gate off.
"""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator

from refinery.text.english import GOPHER_STOP_WORDS


class HeuristicParams(BaseModel):
    language: str = Field("en", description="The language the rule set assumes. Only 'en' ships.")
    disabled_rules: list[str] = Field([], description="Reason codes to skip, e.g. 'c4.curly_bracket'.")

    # Language gate --------------------------------------------------------------------------
    language_gate: bool = Field(True, description="Reject documents that are not in `language`.")
    min_english_word_fraction: float | None = Field(
        0.10, description="Share of English function words below which a document is not English."
    )
    language_gate_min_words: int = Field(20, description="Shorter documents skip the gate.")

    # Gopher quality -------------------------------------------------------------------------
    gopher_quality: bool = True
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_hash_word_ratio: float | None = Field(0.1, description="'#' characters per token.")
    max_ellipsis_word_ratio: float | None = Field(0.1, description="Ellipses per token.")
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    min_alpha_words_ratio: float | None = Field(0.8, description="Tokens with a letter / all tokens.")
    min_stop_words: int | None = 2
    stop_words: list[str] = list(GOPHER_STOP_WORDS)
    bullet_prefixes: list[str] = ["•", "-", "*", "·"]

    # Gopher repetition (table A1) -----------------------------------------------------------
    gopher_repetition: bool = True
    max_dup_para_frac: float | None = 0.30
    max_dup_para_char_frac: float | None = 0.20
    max_dup_line_frac: float | None = 0.30
    max_dup_line_char_frac: float | None = 0.20
    max_top_2gram_char_frac: float | None = 0.20
    max_top_3gram_char_frac: float | None = 0.18
    max_top_4gram_char_frac: float | None = 0.16
    max_dup_5gram_char_frac: float | None = 0.15
    max_dup_6gram_char_frac: float | None = 0.14
    max_dup_7gram_char_frac: float | None = 0.13
    max_dup_8gram_char_frac: float | None = 0.12
    max_dup_9gram_char_frac: float | None = 0.11
    max_dup_10gram_char_frac: float | None = 0.10

    # C4 -------------------------------------------------------------------------------------
    c4: bool = True
    c4_rewrite_lines: bool = Field(
        True, description="Keep only the lines C4 keeps (terminal punctuation, ≥3 words, no policy/JS)."
    )
    c4_terminal_punctuation: bool = True
    c4_remove_citations: bool = True
    c4_min_words_per_line: int | None = 3
    c4_max_word_length: int | None = 1000
    c4_min_sentences: int | None = 5
    c4_lorem_ipsum: bool = True
    c4_javascript: bool = True
    c4_curly_bracket: bool = True
    c4_policy: bool = True
    c4_badwords: bool = Field(
        False,
        description="C4's bad-words page filter (LDNOOBW English list). C4 applies it (drops any page "
        "with a listed word); off here because the list also removes medical, LGBTQ and documentation "
        "text. When on, c4_badwords_count is a column.",
    )
    c4_max_badwords: int = Field(0, description="Distinct listed words a page may hold (C4: 0).")

    @model_validator(mode="after")
    def _apply_disabled_rules(self) -> HeuristicParams:
        unknown = sorted(set(self.disabled_rules) - set(RULE_SWITCHES))
        if unknown:
            raise ValueError(f"unknown rules in disabled_rules: {unknown}; known: {sorted(RULE_SWITCHES)}")
        for code in self.disabled_rules:
            name, off = RULE_SWITCHES[code]
            object.__setattr__(self, name, off)
        return self

    @field_validator("stop_words")
    @classmethod
    def _lowercase(cls, value: list[str]) -> list[str]:
        return [w.lower() for w in value]

    def top_ngram_limits(self) -> list[tuple[int, float]]:
        return [(n, v) for n in (2, 3, 4) if (v := getattr(self, f"max_top_{n}gram_char_frac")) is not None]

    def dup_ngram_limits(self) -> list[tuple[int, float]]:
        return [
            (n, v) for n in range(5, 11) if (v := getattr(self, f"max_dup_{n}gram_char_frac")) is not None
        ]

    def assumptions(self) -> str:
        """A sentence for the UI: what the rule set takes for granted."""
        gate = (
            f"non-{self.language} documents are rejected as language.not_{'english'} when under "
            f"{self.min_english_word_fraction:.0%} English function words"
            if self.language_gate and self.min_english_word_fraction is not None
            else "no language gate: English-only rules (stop words, sentences) apply to every document"
        )
        return f"Rule set assumes language '{self.language}'; {gate}."


# Reason code -> (parameter, value that switches the rule off).
RULE_SWITCHES: dict[str, tuple[str, object]] = {
    "language.not_english": ("language_gate", False),
    "gopher_quality.short_doc": ("min_doc_words", None),
    "gopher_quality.long_doc": ("max_doc_words", None),
    "gopher_quality.mean_word_length_low": ("min_avg_word_length", None),
    "gopher_quality.mean_word_length_high": ("max_avg_word_length", None),
    "gopher_quality.too_many_hashes": ("max_hash_word_ratio", None),
    "gopher_quality.too_many_ellipsis": ("max_ellipsis_word_ratio", None),
    "gopher_quality.too_many_bullets": ("max_bullet_lines_ratio", None),
    "gopher_quality.too_many_end_ellipsis": ("max_ellipsis_lines_ratio", None),
    "gopher_quality.low_alpha_words": ("min_alpha_words_ratio", None),
    "gopher_quality.few_stop_words": ("min_stop_words", None),
    "gopher_repetition.dup_para_frac": ("max_dup_para_frac", None),
    "gopher_repetition.dup_para_char_frac": ("max_dup_para_char_frac", None),
    "gopher_repetition.dup_line_frac": ("max_dup_line_frac", None),
    "gopher_repetition.dup_line_char_frac": ("max_dup_line_char_frac", None),
    **{f"gopher_repetition.top_{n}gram": (f"max_top_{n}gram_char_frac", None) for n in (2, 3, 4)},
    **{f"gopher_repetition.dup_{n}gram": (f"max_dup_{n}gram_char_frac", None) for n in range(5, 11)},
    "c4.lorem_ipsum": ("c4_lorem_ipsum", False),
    "c4.curly_bracket": ("c4_curly_bracket", False),
    "c4.too_few_sentences": ("c4_min_sentences", None),
    "c4.badwords": ("c4_badwords", False),
}
