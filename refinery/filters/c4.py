"""C4 rules (Raffel et al. 2020): line-level cleanup and three page-level rejections.

Lines are kept only if they end in terminal punctuation, have enough words, hold no overlong
word and mention neither JavaScript nor a cookie/terms policy. A page is rejected outright for
"lorem ipsum" or a curly bracket on a kept line, or for too few sentences in what remains. When
``c4_rewrite_lines`` is on (C4's behaviour) the document continues with the kept lines only.
"""

from __future__ import annotations

import re

from refinery.filters.params import HeuristicParams

CITATION_RE = re.compile(r"\[\d*]|\[edit]|\[citation needed]")
END_PUNCTUATION = (".", "?", "!", '"', "'")
POLICY_PHRASES = (
    "terms of use",
    "privacy policy",
    "cookie policy",
    "uses cookies",
    "use of cookies",
    "use cookies",
)
# A sentence ends at terminal punctuation (optionally followed by closing quotes/brackets)
# that is followed by whitespace or the end of the line.
SENTENCE_END_RE = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)")

Verdict = tuple[str, str] | None


def count_sentences(line: str) -> int:
    return max(1, len(SENTENCE_END_RE.findall(line)))


def c4_rules(text: str, p: HeuristicParams, out: dict) -> tuple[Verdict, str]:
    """Return (verdict, text after line filtering)."""
    kept: list[str] = []
    sentences = removed = 0
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line:
            continue
        line_words = line.split()
        if (
            p.c4_max_word_length is not None
            and len(line) > p.c4_max_word_length  # no word can be longer than its line
            and max(map(len, line_words)) > p.c4_max_word_length
        ):
            removed += 1
            continue
        if p.c4_remove_citations:
            line = CITATION_RE.sub("", line)
        if p.c4_terminal_punctuation and (not line.endswith(END_PUNCTUATION) or line.endswith("...")):
            removed += 1
            continue
        if p.c4_min_words_per_line is not None and len(line_words) < p.c4_min_words_per_line:
            removed += 1
            continue
        lowered = line.lower()
        if p.c4_lorem_ipsum and "lorem ipsum" in lowered:
            out["c4_lines_removed"] = removed
            return ("c4.lorem_ipsum", "a kept line contains 'lorem ipsum'"), text
        if p.c4_javascript and "javascript" in lowered:
            removed += 1
            continue
        if p.c4_curly_bracket and "{" in line:
            out["c4_lines_removed"] = removed
            return ("c4.curly_bracket", "a kept line contains '{'"), text
        if p.c4_policy and any(phrase in lowered for phrase in POLICY_PHRASES):
            removed += 1
            continue
        sentences += count_sentences(line)
        kept.append(line)
    out["c4_lines_removed"] = removed
    out["c4_sentences"] = sentences
    if p.c4_min_sentences is not None and sentences < p.c4_min_sentences:
        return ("c4.too_few_sentences", f"{sentences} sentences in kept lines < {p.c4_min_sentences}"), text
    return None, ("\n".join(kept) if p.c4_rewrite_lines else text)
