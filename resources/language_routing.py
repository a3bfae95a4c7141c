"""Which languages the English-trained text chain takes, shared by the two stages that split on it.

heuristic_filtered takes the main languages and multilingual_filtered every other one; reading the
split from one resource (rather than from each stage's config) means the two can never disagree,
so no document falls between them or lands in both.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field

from refinery.filters.language_routing import LanguageRouting


class LanguageRoutingResource(dg.ConfigurableResource):
    languages: list[str] = Field(
        ["en"],
        description="Main languages (ISO 639-1): heuristic_filtered and the English-trained stages after it "
        "take these; multilingual_filtered takes the rest.",
    )
    min_language_score: float | None = Field(
        None,
        description="Below this language score a document counts as 'unknown': multilingual_filtered, "
        "language-agnostic rules. None: the threshold of the model that labelled the partition "
        "(clean_documents' language_model: lingua 0.65, fastText 0.2, CLD3 0.3).",
    )
    overrides: dict[str, dict[str, Any]] = Field(
        {},
        description="Per-language rule changes (HeuristicParams fields), e.g. {'de': {'min_doc_words': 40}}.",
    )

    def plain(self) -> LanguageRouting:
        """The library's value of this resource (what a stage's maker gets)."""
        return self.routing()

    def routing(self) -> LanguageRouting:
        return LanguageRouting(
            languages=self.languages, min_language_score=self.min_language_score, overrides=self.overrides
        )
