"""Gopher quality's bullet and ellipsis line shares equal a walk over every line, shortcuts or not."""

from itertools import repeat

from refinery.filters.gopher_quality import GopherQualityParams, gopher_quality_counts
from tests.unit.real_text import real_documents

CRAFTED = [
    "",
    "plain line\nanother",
    "- a\n  * b\n\u3000• c\nd...\ne…  \n",
    "x...\r\ny\r\n\r\n",
    "no ends here... but on\nthis one…",
    "...",
    "-",
    "a\u2028- b\u2029c...\x0b",
    "tabs\t-\n\t- x",
]


def _walk(text: str, prefixes: tuple[str, ...]) -> tuple[float, float]:
    lines = text.splitlines() or [text]
    bullet = sum(map(str.startswith, map(str.lstrip, lines), repeat(prefixes))) / len(lines)
    ends = sum(map(str.endswith, map(str.rstrip, lines), repeat(("...", "…")))) / len(lines)
    return bullet, ends


def test_line_shares_equal_the_walk_over_lines():
    off = dict.fromkeys(("min_doc_words", "max_doc_words", "min_avg_word_length", "max_avg_word_length"))
    off |= dict.fromkeys(("max_hash_word_ratio", "max_ellipsis_word_ratio"))
    for prefixes in (["•", "-", "*", "·"], ["§"], [""]):
        p = GopherQualityParams(**off, bullet_prefixes=prefixes)
        for text in [*CRAFTED, *real_documents(60)]:
            out: dict = {}
            gopher_quality_counts(text, 10, 5, 20, 5, p, out)
            bullet, ends = _walk(text, tuple(prefixes))
            assert (out["bullet_lines_ratio"], out["ellipsis_lines_ratio"]) == (bullet, ends), text[:80]
            assert type(out["bullet_lines_ratio"]) is float and type(out["ellipsis_lines_ratio"]) is float
