"""C4 rules (Raffel et al. 2020, section 2.2), after TensorFlow Datasets' ``c4_utils``.

Implemented, with c4_utils' thresholds as defaults: ``clean_page``'s line rules — citation markers
(``[1]``, ``[edit]``, ``[citation needed]``) removed, lines kept only if they end in terminal
punctuation (not an ellipsis), have at least 3 words, hold no word over 1,000 characters and
mention neither JavaScript nor a terms/privacy/cookie policy — and its page rules — rejected for
"lorem ipsum" or a ``{`` on a kept line, or for fewer than 5 sentences in what remains — and the
bad-words page filter (``get_badwords_filter_fn``: the LDNOOBW English list at the commit C4 used,
``data/ldnoobw_en.txt``, matched on the lowercased kept text flanked by non-word characters).
When ``c4_rewrite_lines`` is on (C4's behaviour) the document continues with the kept lines only.

Differences and what is not here: sentences are counted with a regex (terminal punctuation
followed by a space or the line's end), not c4_utils' tokenizer. The bad-words rule is **off by
default** (``c4_badwords=False``) where C4 drops every page with a listed word: the list holds
words such as "sex", "escort", "nude", "xx" and "domination", so on documentation, medical and
LGBTQ text it removes far more than obscenity (Dodge et al. 2021, "Documenting Large Webtext
Corpora"); the count is a column when it runs (``c4_badwords_count``) so a threshold can be chosen
on data. Not implemented: line deduplication across pages (``dedupe_lines``: exact and fuzzy dedup
are their own stages here), the language filter (langdetect ≥ 0.99; our language gate is a separate
rule), URL deduplication and the WebText/RealNews URL filters, and ``paragraph_filter``.
"""

from __future__ import annotations

import re
from functools import cache
from importlib import resources

from pydantic import BaseModel, Field

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


class C4Params(BaseModel):
    """C4's line and page rules, with c4_utils' thresholds."""

    c4: bool = Field(True, description="Run C4's rules (off: none of the c4_* rules runs).")
    c4_rewrite_lines: bool = Field(
        True, description="Keep only the lines C4 keeps (terminal punctuation, ≥3 words, no policy/JS)."
    )
    c4_terminal_punctuation: bool = Field(
        True, description="Drop lines that do not end in . ? ! or a quote (or that end in '...')."
    )
    c4_remove_citations: bool = Field(
        True, description="Remove citation markers from lines: [1], [edit], [citation needed]."
    )
    c4_min_words_per_line: int | None = Field(3, description="Drop lines with fewer words (null: off).")
    c4_max_word_length: int | None = Field(
        1000, description="Drop lines holding a longer word, in characters (null: off)."
    )
    c4_min_sentences: int | None = Field(
        5, description="Reject pages with fewer sentences in their kept lines (null: off)."
    )
    c4_lorem_ipsum: bool = Field(True, description="Reject pages with 'lorem ipsum' in a kept line.")
    c4_javascript: bool = Field(True, description="Drop lines that mention 'javascript'.")
    c4_curly_bracket: bool = Field(True, description="Reject pages with '{' in a kept line (code).")
    c4_policy: bool = Field(
        True, description="Drop lines with a policy phrase ('terms of use', 'privacy policy', cookies)."
    )
    c4_badwords: bool = Field(
        False,
        description="C4's bad-words page filter (LDNOOBW English list). C4 applies it (drops any page "
        "with a listed word); off here because the list also removes medical, LGBTQ and documentation "
        "text. When on, c4_badwords_count is a column.",
    )
    c4_max_badwords: int = Field(0, description="Distinct listed words a page may hold (C4: 0).")


@cache
def badwords() -> tuple[frozenset[str], re.Pattern | None]:
    """The English list: entries that are one word (``\\w`` characters only), found by set lookup
    of the page's words, and a regex for the rest (phrases, ``s&m``, ``g-spot``, an emoji), both
    with C4's flanking rule: a match must not touch a word character on either side."""
    text = resources.files("refinery.filters").joinpath("data/ldnoobw_en.txt").read_text("utf-8")
    entries = {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}
    single = frozenset(e for e in entries if re.fullmatch(r"\w+", e))
    rest = sorted(entries - single, key=lambda e: (-len(e), e))
    pattern = re.compile(r"(?<!\w)(?:{})(?!\w)".format("|".join(map(re.escape, rest)))) if rest else None
    return single, pattern


_WORD_RUN = re.compile(r"\w+")


def badwords_count(text: str) -> int:
    """Distinct entries of the list found in the text (C4 rejects a page when this is above 0)."""
    lowered = text.lower()
    single, pattern = badwords()
    found = len(single.intersection(_WORD_RUN.findall(lowered)))
    if pattern is not None:
        found += len(set(pattern.findall(lowered)))
    return found


def count_sentences(line: str) -> int:
    return max(1, len(SENTENCE_END_RE.findall(line)))


def c4_rules(text: str, p: C4Params, out: dict) -> tuple[Verdict, str]:
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
    page = "\n".join(kept)
    if p.c4_badwords:  # C4 runs it on the cleaned page, as here
        found = out["c4_badwords_count"] = badwords_count(page)
        if found > p.c4_max_badwords:
            return ("c4.badwords", f"{found} listed bad words > {p.c4_max_badwords}"), text
    return None, (page if p.c4_rewrite_lines else text)
