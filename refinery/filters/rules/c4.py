"""C4 (Raffel et al. 2020, section 2.2): line rules that rewrite the page, then page rules."""

from __future__ import annotations

from typing import ClassVar

from refinery.filters.c4 import C4Params, c4_rules
from refinery.filters.rule import Document, Rule, Verdict


class C4(Rule):
    """Keeps the lines C4 keeps (``c4_rewrite_lines``); rejects lorem ipsum, '{', too few sentences
    and, when switched on, listed bad words."""

    name = "c4"
    position = 500
    params = C4Params
    switch = "c4"
    int_scores = ("c4_lines_removed", "c4_sentences", "c4_badwords_count")
    reasons: ClassVar = {
        "c4.lorem_ipsum": ("c4_lorem_ipsum", False),
        "c4.curly_bracket": ("c4_curly_bracket", False),
        "c4.too_few_sentences": ("c4_min_sentences", None),
        "c4.badwords": ("c4_badwords", False),
    }
    language_specific: ClassVar = {"c4": False}  # English sentences, policy phrases and bad words

    @staticmethod
    def check(doc: Document, p: C4Params, scores: dict) -> Verdict:
        verdict, kept_text = c4_rules(doc.text, p, scores)
        if verdict is None:
            doc.text = kept_text
        return verdict
