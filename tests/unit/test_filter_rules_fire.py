"""Rules that the sample and the benchmark corpora never showed firing, each made to fire on a
crafted document, and their scores checked against datatrove's definitions on the same documents
(when the bench extra is installed); plus C4's bad-words rule against C4's own regex."""

import random
import re

import pytest

from refinery.filters.c4 import badwords, badwords_count
from refinery.filters.chain import INT_SCORES, evaluate, filter_batch
from refinery.filters.params import HeuristicParams
from refinery.sample import prose

_rng = random.Random(3)
FILL = (
    prose.paragraph(_rng, "travel", sentences=30) + " " + prose.paragraph(_rng, "history", sentences=30)
).split()
SEGMENT = "the old harbour bridge was closed for repairs after the winter storms"


def weave(phrase: str, times: int, between: int) -> str:
    """``phrase`` ``times`` times, each after ``between`` words of prose."""
    out, fill = [], iter(FILL * 10)
    for _ in range(times):
        out += [next(fill) for _ in range(between)] + phrase.split()
    return " ".join(out) + "."


def _lower_dups_off(n: int) -> list[str]:
    return [f"gopher_repetition.dup_{m}gram" for m in range(5, n)]


def _lines_doc() -> str:
    rng = random.Random(5)
    lines = [prose.paragraph(rng, "history", sentences=1) for _ in range(10)]
    long = prose.paragraph(rng, "cooking", sentences=4).replace("\n", " ")
    return "\n".join([*lines[:5], long, *lines[5:], long])


ELLIPSIS_DOC = " … ".join(" ".join(FILL[i : i + 6]) for i in range(0, 66, 6)) + "."
DUP_NGRAM_DOC = " ".join([*FILL[:100], SEGMENT, *FILL[100:160], *[SEGMENT] * 5, *FILL[160:200]]) + "."
LONG_DOC = " ".join(["word"] * 50 + [f"w{i}" for i in range(100_001)])

# (reason, document, rules switched off so that this one is the first to fail)
CASES = [
    ("gopher_quality.too_many_ellipsis", ELLIPSIS_DOC, []),
    ("gopher_quality.long_doc", LONG_DOC, []),
    ("gopher_repetition.dup_line_char_frac", _lines_doc(), []),
    ("gopher_repetition.top_2gram", weave("extraordinary circumstances", 20, 6), []),
    ("gopher_repetition.top_3gram", weave("extraordinary circumstances everywhere", 6, 17), []),
    ("gopher_repetition.top_4gram", weave("extraordinary circumstances everywhere tonight", 6, 29), []),
    *[
        (
            f"gopher_repetition.dup_{n}gram",
            DUP_NGRAM_DOC,
            [f"gopher_repetition.dup_{m}gram" for m in range(5, n)],
        )
        for n in range(5, 11)
    ],
]


@pytest.mark.parametrize(("code", "text", "off"), CASES, ids=[c[0] for c in CASES])
def test_rule_fires_on_its_crafted_document(code, text, off):
    verdict, _, _ = evaluate(text, HeuristicParams(disabled_rules=off))
    assert verdict is not None and verdict[0] == code, verdict
    verdict, _, _ = evaluate(text, HeuristicParams(disabled_rules=[*off, code]))
    assert verdict is None or verdict[0] != code  # and switching it off stops it


def _datatrove_scores(text: str, language: str = "en") -> dict:
    """The scores datatrove's Gopher filters compare with their thresholds, from its own helpers."""
    from datatrove.pipeline.filters.gopher_repetition_filter import (
        find_all_duplicate,
        find_duplicates,
        find_top_duplicate,
        get_n_grams,
    )
    from datatrove.utils.text import split_into_words

    words = split_into_words(text, language)
    lines = re.split("\n+", text)
    out = {
        "ellipsis_ratio": (text.count("...") + text.count("…")) / len(words),
        "dup_line_char_frac": find_duplicates(lines)[1] / len(text),
    }
    for n in (2, 3, 4):
        out[f"top_{n}gram_char_frac"] = find_top_duplicate(get_n_grams(words, n)) / len(text)
    for n in range(5, 11):
        out[f"dup_{n}gram_char_frac"] = find_all_duplicate(words, n) / len(text)
    return out


DATATROVE_REASON = {
    "gopher_quality.too_many_ellipsis": "gopher_too_many_ellipsis",
    "gopher_quality.long_doc": "gopher_long_doc",
    "gopher_repetition.dup_line_char_frac": "dup_line_char_frac",
    **{f"gopher_repetition.top_{n}gram": f"top_{n}_gram" for n in (2, 3, 4)},
    **{f"gopher_repetition.dup_{n}gram": f"duplicated_{n}_n_grams" for n in range(5, 11)},
}


@pytest.mark.parametrize(("code", "text", "off"), CASES, ids=[c[0] for c in CASES])
def test_datatrove_agrees_on_the_crafted_documents(code, text, off):
    """The same document makes datatrove's filter fail the same rule (with the same rules off), and
    the score is the same up to the word tokenizer (ours counts punctuation as tokens, datatrove's
    splits words with its own tokenizer): within 15 %, and exactly for line-level scores."""
    pytest.importorskip("datatrove")
    from datatrove.data import Document
    from datatrove.pipeline.filters import GopherQualityFilter, GopherRepetitionFilter

    dup = tuple((n, v) for n, v in zip(range(5, 11), (0.15, 0.14, 0.13, 0.12, 0.11, 0.10), strict=True))
    dup = tuple((n, v) for n, v in dup if f"gopher_repetition.dup_{n}gram" not in off)
    filters = [GopherQualityFilter(), GopherRepetitionFilter(dup_n_grams=dup)]
    theirs = next((r[1] for f in filters if (r := f.filter(Document(text=text, id="x"))) is not True), None)
    assert theirs == DATATROVE_REASON[code]
    if code == "gopher_quality.long_doc":
        return
    _, ours, _ = evaluate(text, HeuristicParams(disabled_rules=off))
    score = {
        "gopher_quality.too_many_ellipsis": "ellipsis_ratio",
        "gopher_repetition.dup_line_char_frac": "dup_line_char_frac",
    }.get(code) or (f"{code.split('.')[1].replace('gram', '')}gram_char_frac")
    reference = _datatrove_scores(text)[score]
    print(f"{code}: ours {ours[score]:.4f}, datatrove {reference:.4f}")
    if score == "dup_line_char_frac":
        assert ours[score] == pytest.approx(reference, rel=1e-12)
    elif score == "ellipsis_ratio":  # datatrove divides by words, we by tokens (words and symbols)
        assert ours[score] <= reference
    else:
        assert ours[score] == pytest.approx(reference, rel=0.15)


# -- C4's bad-words rule ---------------------------------------------------------------------------


def c4_regex() -> re.Pattern:
    """TFDS c4_utils / datatrove C4BadWordsFilter: the list joined, flanked by ``\\W`` or an edge."""
    single, pattern = badwords()
    phrases = pattern.pattern.removeprefix(r"(?<!\w)(?:").removesuffix(r")(?!\w)").split("|")
    words = [re.escape(w) for w in sorted(single)] + phrases
    return re.compile(r"(?:\W|^)({})(?:\W|$)".format("|".join(words)))


BAD_CASES = [
    "A page about nothing in particular, with five sentences. Really. Yes. No. Maybe.",
    "Sex education is taught here.",
    "The essex coast (no match inside a word).",
    "g-spot, s&m and 🖕 are phrases or symbols.",
    "two girls one cup",
    "Classes: sussex, middlesex, Sexton, sextant.",
    "xx marks the spot; 0xx does not.",
    "Ends with ass",
    "",
]


def test_badword_existence_equals_c4s_regex():
    regex = c4_regex()
    texts = BAD_CASES + [" ".join(FILL[i : i + 40]) for i in range(0, 200, 40)]
    for text in texts:
        assert (badwords_count(text) > 0) == bool(regex.search(text.lower())), text


def test_badwords_rule_is_off_by_default_and_fires_when_on():
    page = "\n".join(
        [prose.paragraph(random.Random(i), "health", sentences=3) for i in range(3)]
        + ["This page also mentions sex education in one line of its own."]
    )
    verdict, scores, _ = evaluate(page, HeuristicParams(language_gate=False))
    assert verdict is None and "c4_badwords_count" not in scores
    verdict, scores, _ = evaluate(page, HeuristicParams(language_gate=False, c4_badwords=True))
    assert verdict[0] == "c4.badwords" and scores["c4_badwords_count"] == 1
    verdict, _, _ = evaluate(page, HeuristicParams(language_gate=False, c4_badwords=True, c4_max_badwords=1))
    assert verdict is None
    assert HeuristicParams(disabled_rules=["c4.badwords"], c4_badwords=True).c4_badwords is False
    assert "c4_badwords_count" in INT_SCORES
    frame = filter_batch(__import__("pandas").DataFrame({"id": ["a"], "text": [page]}), HeuristicParams())
    assert frame.kept["c4_badwords_count"].isna().all()
