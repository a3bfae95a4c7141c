"""clean_batch's text column (the stage's Arrow column with only the rows that repair and
redaction changed set) equals the column built from the cleaned strings, as the stage built it
before, on any index; the labels from prefixes cut in Arrow equal the list path's."""

import pandas as pd

from refinery.batch import split_batch
from refinery.clean.cleaning import CleanParams, clean_batch, clean_texts
from refinery.clean.pii import PII_KINDS
from refinery.text.language_id import LanguageIdParams, label_batch, label_texts
from tests.unit.real_text import real_documents
from tests.unit.test_clean_batch import PII_CASES


def _reference(frame: pd.DataFrame, params: CleanParams):
    originals = frame["text"].tolist()
    texts, found = clean_texts(originals, params)
    counts = {f"pii_{kind}": [c[kind] for c in found] for kind in PII_KINDS}
    changed = [a != b for a, b in zip(texts, originals, strict=True)]
    reasons = [None if t else ("empty_after_cleaning", "no text left after cleaning") for t in texts]
    return split_batch(frame.assign(text=texts, text_changed=changed, **counts), reasons)


def test_text_column_equals_the_list_built_column():
    docs = [
        *real_documents(30),
        *PII_CASES,
        "\u200b",
        "  ",
        "a\x00b",
        "doesn\u00e2\u20ac\u2122t \u201cso\u201d",
        "cafe\u0301",
    ]
    frame = pd.DataFrame(
        {"id": [f"d{i}" for i in range(len(docs))], "text": docs}, index=range(7, 7 + 3 * len(docs), 3)
    )
    for params in (CleanParams(), CleanParams(redact=[]), CleanParams(placeholder="[{kind}\\1]")):
        got, want = clean_batch(frame, params), _reference(frame, params)
        pd.testing.assert_frame_equal(got.kept, want.kept)
        pd.testing.assert_frame_equal(got.rejected, want.rejected)


def test_labels_from_arrow_prefixes_equal_the_list_path():
    docs = [
        *real_documents(30),
        "Ceci est une phrase en français, assez longue pour le modèle.",
        "",
        "😀" * 500,
    ]
    frame = pd.DataFrame({"text": docs}, index=range(100, 100 + len(docs)))
    for params in (LanguageIdParams(), LanguageIdParams(max_chars=37)):
        got = label_batch(frame, params)
        languages, scores = label_texts(docs, params)
        assert got["language"].tolist() == languages
        assert got["language_score"].tolist() == pd.Series(scores, dtype="float32").tolist()
        assert got.index.equals(frame.index)


def test_text_changed_compared_in_arrow_equals_the_strings_comparison(monkeypatch):
    """The stage's column is compared in Arrow with the cleaned texts (the batch's strings are not
    kept for it): the same text_changed as comparing the strings, also where the batch fell back
    to cleaning one by one (forced here: the first Arrow replacement refuses)."""
    from refinery.clean import cleaning

    docs = [*real_documents(12), *PII_CASES, "cafe\u0301", "plain", "\u200b"]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(docs))], "text": docs})
    want = _reference(frame, CleanParams())
    assert want.kept["text_changed"].any() and not want.kept["text_changed"].all()
    got = clean_batch(frame, CleanParams())
    pd.testing.assert_frame_equal(got.kept, want.kept)
    replaced, calls = cleaning._replaced, []

    def refuse_first(*args):
        calls.append(1)
        if len(calls) == 1:
            raise cleaning.pa.ArrowInvalid("forced")
        return replaced(*args)

    monkeypatch.setattr(cleaning, "_replaced", refuse_first)
    got = clean_batch(frame, CleanParams())
    assert calls == [1]  # cleaned one by one: no column built from Arrow
    pd.testing.assert_frame_equal(got.kept, want.kept)
    pd.testing.assert_frame_equal(got.rejected, want.rejected)
