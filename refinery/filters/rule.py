"""What a heuristic rule is: the contract every unit of the chain (``refinery/filters/rules/``) meets.

A rule is one class: its name, its place in the chain, its parameters (a pydantic model whose
fields become part of ``HeuristicParams``, hence of the stage's Dagster config), the score columns
it fills, the reason codes it can give with the parameter that switches each off, and ``check``.
The chain (:mod:`refinery.filters.chain`) finds the rules, orders them, and derives everything else
from these declarations: the parameter model, the output columns, ``disabled_rules``, and the rule
sets of other languages (:mod:`refinery.filters.language_routing`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, model_validator

from refinery.text.kernels.doc_counts import BatchCounts
from refinery.text.word_counts import DocCounts, DocShape, letter_word_count
from refinery.text.words import token_count, tokens, word_tokens, words

Verdict = tuple[str, str] | None


@dataclass(frozen=True)
class BatchChecks:
    """A rule run over a whole batch at once, from its counts (:attr:`Rule.check_batch`): what
    :meth:`Rule.check` gives each document, in columns.

    - ``verdicts``: per document, the first failed check as (code, detail), or None;
    - ``passed``: per document, whether it failed none (a bool array: ``verdicts`` is None);
    - ``scores``: per score column the rule fills, a float64 array: the score where the check that
      computes it was reached, NaN where it was not (as a column built from ``check``'s dicts).
    """

    verdicts: list[Verdict]
    passed: np.ndarray
    scores: dict[str, np.ndarray]


class Document:
    """One document as the rules see it: its text, its token and word counts, and its tokens and
    words, each split once and only if a rule asks for them.

    ``char_counts``: either the document's :class:`refinery.text.word_counts.DocCounts` (the
    chain computes them for a whole batch at once, :func:`refinery.text.word_counts.word_counts`:
    then no list is built until a rule asks for one, and Gopher quality, which rejects most
    documents of real corpora, works from the counts alone), or the text's (word characters, other
    non-space characters), as :func:`refinery.text.words.char_class_counts` gives them: a document
    heavy in symbols then has its tokens counted and its words listed alone. Without either, the
    tokens and words are split here. The results are the same every way; only the work differs.

    A rule that rewrites the text (C4 keeps only some lines) sets :attr:`text`; ``tokens`` and
    ``words`` stay those of the text as it came in.
    """

    __slots__ = ("_source", "_tokens", "_words", "counts", "n_tokens", "text")

    def __init__(self, text: str, char_counts: tuple[int, int] | DocCounts | None = None):
        self.text = self._source = text
        self._tokens: list[str] | None = None
        self._words: list[str] | None = None
        self.counts: DocCounts | None = None
        if isinstance(char_counts, DocCounts):
            self.counts = char_counts
            self.n_tokens = char_counts.tokens
        elif char_counts is not None and symbol_heavy(*char_counts):
            self._words = words(text)
            self.n_tokens = token_count(self._words, *char_counts)
        else:
            self._tokens = tokens(text)
            self._words = word_tokens(self._tokens)
            self.n_tokens = len(self._tokens)

    @property
    def tokens(self) -> list[str]:
        """Words and single symbol characters, in order (built on first use)."""
        if self._tokens is None:
            self._tokens = tokens(self._source)
        return self._tokens

    @property
    def words(self) -> list[str]:
        """The word tokens (built on first use: from the tokens when they are there)."""
        if self._words is None:
            self._words = words(self._source) if self._tokens is None else word_tokens(self._tokens)
        return self._words

    @property
    def shape(self) -> DocShape | None:
        """The text's line and symbol counts from the batch pass, while the text is the one they
        were counted on (no rule has rewritten it)."""
        if self.counts is None or self.text is not self._source:
            return None
        return self.counts.shape

    def word_stats(self) -> tuple[int, int, int]:
        """(words, their total length, words holding a letter): from the counts when given."""
        if self.counts is not None:
            return self.counts.words, self.counts.word_length, self.counts.letter_words
        wrds = self.words
        return len(wrds), sum(map(len, wrds)), letter_word_count(wrds)


def symbol_heavy(word_chars: int, other_chars: int) -> bool:
    """Estimated share of symbol tokens above 15 % (words taken as five characters long)."""
    return other_chars > 0.15 * (other_chars + word_chars / 5)


class ChainParams(BaseModel):
    """The parameters every chain has; each rule's parameter model is mixed in after these."""

    language: str = Field("en", description="The language the rule set assumes. Only 'en' ships.")
    disabled_rules: list[str] = Field([], description="Reason codes to skip, e.g. 'c4.curly_bracket'.")

    # Reason code -> (parameter, value that switches the rule off); set by the chain that builds the model.
    rule_switches: ClassVar[dict[str, tuple[str, object]]] = {}

    @model_validator(mode="after")
    def _apply_disabled_rules(self) -> ChainParams:
        switches = type(self).rule_switches
        unknown = sorted(set(self.disabled_rules) - set(switches))
        if unknown:
            raise ValueError(f"unknown rules in disabled_rules: {unknown}; known: {sorted(switches)}")
        for code in self.disabled_rules:
            name, off = switches[code]
            object.__setattr__(self, name, off)
        return self


class Rule:
    """One heuristic rule (a family of checks that share their inputs). Subclass it in a module of
    ``refinery/filters/rules/``, and the chain runs it: nothing else needs an edit.

    - ``name``: what the rule is called (reason codes start with it by convention).
    - ``position``: where it runs; lower first. The first failed rule names the rejection, and
      rules after it do not run (their score columns are null for that row).
    - ``listed_at``: where its parameters and score columns are listed (default: ``position``).
    - ``params``: its parameter model; the chain mixes it into ``HeuristicParams``.
    - ``switch``: the boolean parameter that runs the rule at all.
    - ``int_scores`` / ``float_scores``: the columns it fills (int32 / float32); every score of
      every rule that ran is kept, so SQL can slice any threshold afterwards.
    - ``reasons``: every reason code it gives → (parameter, value that switches that check off);
      these are what ``disabled_rules`` accepts.
    - ``language_specific``: parameter values that switch off what assumes the language's own
      words; applied in the language-agnostic rule sets (other languages, 'unknown').
    - ``counts_words``: parameter values that switch off the checks that count words; applied
      for languages written without spaces (zh, ja, th), where ``\\w+`` cannot count them.
    - ``check_batch`` (optional): ``check`` over a whole batch's counts at once (:class:`BatchChecks`);
      the chain uses it when the rule runs first.
    """

    name: ClassVar[str]
    position: ClassVar[int]
    listed_at: ClassVar[int | None] = None
    params: ClassVar[type[BaseModel]]
    switch: ClassVar[str]
    int_scores: ClassVar[tuple[str, ...]] = ()
    float_scores: ClassVar[tuple[str, ...]] = ()
    reasons: ClassVar[dict[str, tuple[str, object]]] = {}
    language_specific: ClassVar[dict[str, object]] = {}
    counts_words: ClassVar[dict[str, object]] = {}
    # The rule over a whole batch from the compiled pass's counts
    # (:class:`refinery.text.kernels.doc_counts.BatchCounts`), where it needs nothing else of the
    # documents: the same verdicts and scores as ``check``, without a Python call per document.
    check_batch: ClassVar[Callable[[BatchCounts, Any], BatchChecks] | None] = None

    @staticmethod
    def check(doc: Document, p: Any, scores: dict) -> Verdict:
        """Fill ``scores`` with this rule's columns; return the first failed check as (code, detail)."""
        raise NotImplementedError

    @classmethod
    def listing_key(cls) -> int:
        return cls.position if cls.listed_at is None else cls.listed_at
