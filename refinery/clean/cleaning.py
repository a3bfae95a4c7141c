"""The cleaning stage over a batch: repair, tidy, redact, and drop what cleaning emptied."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from refinery import markdown
from refinery.batch import BatchResult, split_batch
from refinery.clean.normalize import (
    fix_unicode,
    fix_unicode_batch,
    normalize_form,
    normalize_forms,
    normalize_whitespace,
    strip_invisible,
    tidy_batch,
)
from refinery.clean.pii import PII_KINDS, redact, redact_batch
from refinery.kernel.processor import StageProcessor
from refinery.metadata import Markdown
from refinery.text.language_id import LanguageIdParams, label_batch

PII_COLUMNS = [f"pii_{kind}" for kind in PII_KINDS]
CLEAN_FIELDS = [pa.field(col, pa.int32()) for col in PII_COLUMNS] + [pa.field("text_changed", pa.bool_())]


class CleanParams(BaseModel):
    """What the cleaning stage changes. Each step can be switched off."""

    fix_unicode: bool = Field(True, description="Repair mojibake and straighten quotes with ftfy.")
    unicode_form: str = Field("NFC", description="Unicode normal form: NFC, NFKC or none.")
    strip_invisible: bool = Field(True, description="Drop control and zero-width characters.")
    normalize_whitespace: bool = Field(True, description="Collapse spaces and blank-line runs.")
    redact: list[str] = Field(list(PII_KINDS), description=f"PII kinds to redact, of {list(PII_KINDS)}.")
    placeholder: str = Field("<{kind}>", description="Replacement; {kind} becomes EMAIL, PHONE, IP…")


def clean_text(text: str, params: CleanParams) -> tuple[str, dict[str, int]]:
    out = text
    if params.fix_unicode:
        out = fix_unicode(out)
    if params.unicode_form != "none":
        out = normalize_form(out, params.unicode_form)
    if params.strip_invisible:
        out = strip_invisible(out)
    if params.normalize_whitespace:
        out = normalize_whitespace(out)
    return redact(out, set(params.redact), params.placeholder)


def clean_texts(texts: list[str], params: CleanParams) -> tuple[list[str], list[dict[str, int]]]:
    """:func:`clean_text` over a batch, with the same result for every document.

    Each step runs over the whole batch where a vectorized kernel exists: ftfy behind a pre-check
    that proves where it cannot act (:mod:`refinery.clean.ftfy_gate`); NFC per document (a C
    quick-check, ASCII skipped); invisible characters and whitespace in one compiled pass over an
    Arrow array (:func:`refinery.clean.normalize.tidy_batch`); PII as RE2 candidate searches, the
    Python detectors (and their validators: Luhn, ``ipaddress``, digit counts) only on documents
    with a candidate. Text that Arrow cannot hold
    (lone surrogates) takes :func:`clean_text` one document at a time.
    """
    cleaned = _clean_texts(texts, params)
    return cleaned.texts, cleaned.counts


@dataclass
class Cleaned:
    """A batch's cleaned texts and PII counts, and, where the batch went through Arrow, the Arrow
    array of the texts before redaction (``tidy``) with its strings as listed (``tidy_list``):
    a text that redaction left is the very object of ``tidy_list``, so the cleaned column can be
    ``tidy`` with only the redacted rows replaced (:func:`text_column`)."""

    texts: list[str]
    counts: list[dict[str, int]]
    tidy: pa.Array | None = None
    tidy_list: list[str] | None = None


def _clean_texts(texts: list[str], params: CleanParams, original: pa.Array | None = None) -> Cleaned:
    """``original``: ``texts`` as an Arrow large_string array, when the caller has them (the
    stage's column): then nothing is converted from Python but the texts that repair changed."""
    out = fix_unicode_batch(texts, original) if params.fix_unicode else list(texts)
    out = normalize_forms(out, params.unicode_form, repaired=params.fix_unicode)
    try:
        arr = pa.array(out, pa.large_string()) if original is None else _replaced(original, texts, out)
    except (UnicodeEncodeError, pa.ArrowInvalid):
        return Cleaned(*_clean_one_by_one(out, params, fixed=True))
    del texts, out  # the strings before tidying: freed here where the caller kept no other reference
    arr = tidy_batch(arr, params.strip_invisible, params.normalize_whitespace)
    tidy_list = arr.to_pylist()
    return Cleaned(*redact_batch(tidy_list, arr, set(params.redact), params.placeholder), arr, tidy_list)


def _replaced(arr: pa.Array, before: list[str], after: list[str]) -> pa.Array:
    """``arr`` (the strings ``before``) with the rows where ``after`` holds another object set to
    it: ``pa.array(after)`` without converting the rows that did not change."""
    changed = [i for i, (new, old) in enumerate(zip(after, before, strict=True)) if new is not old]
    if not changed:
        return arr
    mask = np.zeros(len(arr), dtype=bool)
    mask[changed] = True
    return pc.replace_with_mask(arr, mask, pa.array([after[i] for i in changed], arr.type))


def text_column(cleaned: Cleaned, index: pd.Index) -> pd.Series | list[str]:
    """The cleaned text as the stage's column: from the Arrow array with the redacted rows set,
    instead of converting every cleaned string back from Python (the same values and type as a
    column built from ``cleaned.texts``)."""
    if cleaned.tidy is None or cleaned.tidy_list is None:
        return cleaned.texts
    return _as_column(_replaced(cleaned.tidy, cleaned.tidy_list, cleaned.texts), cleaned, index)


def _as_column(final: pa.Array, cleaned: Cleaned, index: pd.Index) -> pd.Series | list[str]:
    """``final`` (the cleaned texts in Arrow) as the stage's column; the cleaned strings' list
    where Arrow's conversion would give another dtype than a column built from the list."""
    column = final.to_pandas().set_axis(index)
    return column if column.dtype == _STR_DTYPE else cleaned.texts


_STR_DTYPE = pd.Series(["text"]).dtype  # what a column built from a list of strings is


def _large_strings(column: pd.Series) -> pa.Array | None:
    """The column's strings as one Arrow large_string array when it holds them so (the stage's
    text column, read from Parquet), else None (the caller converts its list)."""
    if column.dtype != _STR_DTYPE or column.hasnans:
        return None
    arr = pa.array(column)
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    return arr if arr.type == pa.large_string() else None


def _clean_one_by_one(texts: list[str], params: CleanParams, fixed: bool) -> tuple[list[str], list[dict]]:
    steps = params.model_copy(update={"fix_unicode": params.fix_unicode and not fixed})
    results = [clean_text(t, steps) for t in texts]
    return [t for t, _ in results], [c for _, c in results]


def clean_batch(frame: pd.DataFrame, params: CleanParams) -> BatchResult:
    unknown = set(params.redact) - set(PII_KINDS)
    if unknown:
        raise ValueError(f"unknown PII kinds {sorted(unknown)}; choose from {list(PII_KINDS)}")
    original = _large_strings(frame["text"])
    if original is None:
        originals = frame["text"].tolist()
        cleaned = _clean_texts(originals, params)
        column = text_column(cleaned, frame.index)
        changed = [a != b for a, b in zip(cleaned.texts, originals, strict=True)]
    else:  # the list is handed over, not kept: _clean_texts frees it before listing the tidied texts
        cleaned = _clean_texts(frame["text"].tolist(), params, original)
        column, changed = _column_and_changes(cleaned, original, frame.index)
    texts, found = cleaned.texts, cleaned.counts
    counts = {f"pii_{kind}": [c[kind] for c in found] for kind in PII_KINDS}
    reasons = [None if t else ("empty_after_cleaning", "no text left after cleaning") for t in texts]
    out = frame.assign(text=column, text_changed=changed, **counts)
    return split_batch(out, reasons)


def _column_and_changes(
    cleaned: Cleaned, original: pa.Array, index: pd.Index
) -> tuple[pd.Series | list[str], list[bool]]:
    """The cleaned text column and, per row, whether it differs from ``original`` (the batch's
    texts in Arrow), compared in Arrow: UTF-8 bytes are equal exactly when the strings are, so
    the batch's strings as Python objects need not outlive the cleaning (they are a second copy
    of the batch beside the tidied ones; ~100 MB of a 5,000-document batch)."""
    if cleaned.tidy is None or cleaned.tidy_list is None:  # cleaned one by one
        return cleaned.texts, [a != b for a, b in zip(cleaned.texts, original.to_pylist(), strict=True)]
    final = _replaced(cleaned.tidy, cleaned.tidy_list, cleaned.texts)
    return _as_column(final, cleaned, index), pc.not_equal(final, original).to_pylist()


def unlabelled(frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with null ``language`` / NaN ``language_score``: rows cleaning rejected, and every
    row when labelling is off. The columns are always there, so clean_documents has one schema
    whatever its config; a null label means "not labelled", which the language routing sends to
    the main output under the base rules (English gate included)."""
    return frame.assign(
        language=pd.Series([None] * len(frame), index=frame.index, dtype=object),
        language_score=pd.Series([float("nan")] * len(frame), index=frame.index, dtype="float32"),
    )


class Cleaner(StageProcessor):
    """The clean_documents processor: :func:`clean_batch`, then the language of what it keeps
    (on the cleaned text) when ``languages`` is given (null labels otherwise: :func:`unlabelled`),
    plus totals for the report."""

    def __init__(self, params: CleanParams, languages: LanguageIdParams | None = None):
        self.params = params
        self.languages = languages
        self.pii = dict.fromkeys(PII_COLUMNS, 0)
        self.changed = 0
        self.by_language: Counter = Counter()

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        result = clean_batch(frame, self.params)
        kept = unlabelled(result.kept) if self.languages is None else label_batch(result.kept, self.languages)
        result = BatchResult(kept, unlabelled(result.rejected))
        if self.languages is not None:
            self.by_language.update(result.kept["language"].tolist())
        for part in (result.kept, result.rejected):
            for col in PII_COLUMNS:
                self.pii[col] += int(part[col].sum())
            self.changed += int(part["text_changed"].sum())
        return result

    def report(self) -> dict:
        out = {
            "pii_redacted": Markdown(markdown.table(["kind", "occurrences"], self.pii.items())),
            "pii_total": sum(self.pii.values()),
            "documents_changed": self.changed,
        }
        if self.languages is None:
            out["languages"] = Markdown("_not labelled (label_language is off): language is null_")
        else:
            rows = sorted(self.by_language.items(), key=lambda kv: (-kv[1], kv[0]))
            out["languages"] = Markdown(markdown.table(["language", "documents"], rows) if rows else "_none_")
        return out

    def summary(self) -> dict:
        return {"pii": dict(self.pii), "documents_changed": self.changed, "languages": dict(self.by_language)}

    def absorb(self, summary: dict) -> None:
        """Add another worker's counts (the Ray engine cleans slices in parallel)."""
        for col, n in summary.get("pii", {}).items():
            self.pii[col] += n
        self.changed += summary.get("documents_changed", 0)
        self.by_language.update(summary.get("languages", {}))
