"""Gopher quality over a whole batch (:func:`gopher_quality_batch`, the chain's batch path) equals
the per-document path exactly: every kept and rejected row, reason, detail string and score (with
the same nulls: a score only where its check was reached), on real documents and constructed edge
cases (every Gopher quality reason, None thresholds, empty texts, texts without a word, disabled
rules, other bullet prefixes, other languages' rule sets); and where the batch path does not apply
(Gopher quality off, text Arrow cannot hold) the per-document path is taken."""

import math

import pandas as pd
import pytest

from refinery.filters.chain import CHAIN, evaluate, filter_batch, kept_text_column
from refinery.filters.gopher_quality import gopher_quality_batch, gopher_quality_counts
from refinery.filters.language_routing import rule_params
from refinery.filters.params import HeuristicParams
from refinery.filters.rules.gopher_quality import GopherQuality
from refinery.text.kernels.doc_counts import batch_counts
from refinery.text.kernels.utf8 import large_strings
from tests.unit.real_text import real_documents

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

EDGE = [
    "",
    " ",
    "\n\n",
    "... ### --- ***",  # no word at all: mean_word_length 0.0
    "#",
    "word",
    "- item one\n- item two...\n" * 20,
    "the cat sat on the mat… " * 40,
    "# heading\n## more ### hashes #\n" * 12,
    "supercalifragilisticexpialidocious " * 60,
    "a b c d e f g h i j " * 10,
    "• one\n· two\n* three\n-> four\n" * 15,
    "The quick brown fox jumps over the lazy dog. It was the best of times. " * 20,
    "Mixed 3.5 don't stop-me.now, ÀÉ résumé naïve 中文 😀.\n" * 30,
]

THRESHOLDS = [
    "min_doc_words",
    "max_doc_words",
    "min_avg_word_length",
    "max_avg_word_length",
    "max_hash_word_ratio",
    "max_ellipsis_word_ratio",
    "max_bullet_lines_ratio",
    "max_ellipsis_lines_ratio",
    "min_alpha_words_ratio",
]

# Each makes one Gopher quality reason fire on some documents; with the defaults, short_doc and
# low_alpha_words fire on the real documents.
PARAMS = [
    {},
    {name: None for name in THRESHOLDS},
    {"min_doc_words": None, "min_alpha_words_ratio": None},
    {"min_doc_words": 0, "max_doc_words": 40},
    {"min_doc_words": None, "min_avg_word_length": 5.5},
    {"min_doc_words": None, "max_avg_word_length": 4},
    {"min_doc_words": None, "max_hash_word_ratio": 0.0},
    {"min_doc_words": None, "max_hash_word_ratio": None, "max_ellipsis_word_ratio": 0.0},
    {"min_doc_words": None, "max_bullet_lines_ratio": 0.05},
    {"min_doc_words": None, "max_ellipsis_word_ratio": None, "max_ellipsis_lines_ratio": 0.0},
    {"min_alpha_words_ratio": 0.95},
    {"disabled_rules": ["gopher_quality.short_doc", "gopher_quality.low_alpha_words", "c4.curly_bracket"]},
    {"bullet_prefixes": ["->", "#", "•"], "min_doc_words": None, "max_bullet_lines_ratio": 0.0},
    {"bullet_prefixes": [], "min_doc_words": None, "max_bullet_lines_ratio": 0.0},
    {"min_avg_word_length": 3.0, "max_avg_word_length": 10.0, "min_alpha_words_ratio": 0.5},
    {"min_doc_words": 10**9},  # every document rejected by Gopher quality: no later rule runs
]


def frame_of(docs) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"d{i}" for i in range(len(docs))], "text": list(docs)})


def documents() -> list[str]:
    return list(real_documents(60)) + EDGE


def assert_same_result(frame: pd.DataFrame, params: HeuristicParams) -> pd.DataFrame:
    """filter_batch (the batch path where it applies) equals filter_each, exactly; the rejected rows."""
    got, want = filter_batch(frame, params), CHAIN.filter_each(frame, params)
    pd.testing.assert_frame_equal(got.kept, want.kept, check_exact=True)
    pd.testing.assert_frame_equal(got.rejected, want.rejected, check_exact=True)
    return got.rejected


@pytest.mark.parametrize("overrides", PARAMS)
def test_batch_path_equals_the_per_document_path(overrides):
    assert_same_result(frame_of(documents()), HeuristicParams(**overrides))


def test_every_gopher_quality_reason_is_held_equal():
    """The parameter sets above make every reason of the rule fire (else the test proves less)."""
    frame = frame_of(documents())
    seen = set()
    for overrides in PARAMS:
        seen |= set(assert_same_result(frame, HeuristicParams(**overrides))["reason"])
    assert set(GopherQuality.reasons) <= seen


@pytest.mark.parametrize("language", ["en", "de", "zh", "xx", "unknown"])
def test_other_languages_rule_sets_are_held_equal(language):
    assert_same_result(frame_of(documents()), rule_params(language))


@pytest.mark.parametrize("overrides", PARAMS)
def test_batch_verdicts_and_scores_equal_gopher_quality_counts(overrides):
    """Per document: the same verdict, and a score exactly where the per-document rule set one."""
    p = HeuristicParams(**overrides)
    docs = documents()
    counts = batch_counts(large_strings(docs), p.bullet_prefixes)
    batch = gopher_quality_batch(counts, p)
    for i, (text, row) in enumerate(zip(docs, counts.rows(), strict=True)):
        scores: dict = {}
        verdict = gopher_quality_counts(
            text, row.tokens, row.words, row.word_length, row.letter_words, p, scores, row.shape
        )
        assert batch.verdicts[i] == verdict, text[:80]
        assert bool(batch.passed[i]) == (verdict is None)
        got = {name: values[i] for name, values in batch.scores.items() if not math.isnan(values[i])}
        assert got == scores, text[:80]


def test_batch_path_runs_no_per_document_gopher_check(monkeypatch):
    """The batch path is the one taken by default; the per-document check is not called."""

    def fail(*args):
        raise AssertionError("per-document Gopher quality check called")

    frame = frame_of(documents())
    want = CHAIN.filter_each(frame, HeuristicParams())
    monkeypatch.setattr(GopherQuality, "check", staticmethod(fail))
    got = filter_batch(frame, HeuristicParams())
    pd.testing.assert_frame_equal(got.rejected, want.rejected, check_exact=True)


def test_gopher_quality_off_takes_the_per_document_path_and_object_columns_the_batch_one():
    """Without Gopher quality first there is no batch form: every rule runs per document. A column
    of Python objects (not Arrow-backed) is counted by the compiled pass all the same. (Text Arrow
    cannot hold, a lone surrogate, takes the per-document counts: ``test_text_kernels``.)"""
    docs = documents()[:40]
    frame = pd.DataFrame({"id": range(len(docs)), "text": pd.Series(docs, dtype=object)})
    for params in (HeuristicParams(), HeuristicParams(gopher_quality=False)):
        result = assert_same_result(frame, params)
        rejected = dict(
            zip(result["id"], zip(result["reason"], result["reason_detail"], strict=True), strict=True)
        )
        for i, text in enumerate(docs):
            verdict, _, _ = evaluate(text, params)
            assert rejected.get(i) == verdict


def test_empty_batch_keeps_the_per_document_columns():
    empty = frame_of([])
    got, want = filter_batch(empty, HeuristicParams()), CHAIN.filter_each(empty, HeuristicParams())
    pd.testing.assert_frame_equal(got.kept, want.kept)
    pd.testing.assert_frame_equal(got.rejected, want.rejected)


def test_kept_text_column_of_some_rows_equals_the_whole_list():
    texts = ["keep me", "drop a line\nok.", "é as it came", "x"]
    rows = [1, 3]
    kept = ["ok.", texts[3]]  # row 1 rewritten, row 3 the same object
    whole = [texts[0], "ok.", texts[2], texts[3]]
    for column in (pd.Series(texts), pd.Series(texts, dtype=object), pd.Series(texts, dtype="string")):
        got = kept_text_column(column, [texts[i] for i in rows], kept, pd.Index(rows).to_numpy())
        pd.testing.assert_frame_equal(
            pd.DataFrame({"text": column}).assign(text=got), pd.DataFrame({"text": column}).assign(text=whole)
        )
