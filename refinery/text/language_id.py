"""Language labels for a batch of documents: ``language`` (ISO 639-1) and ``language_score``.

lingua (``lingua-language-detector``, Apache-2.0) ships its n-gram models inside the wheel, so
nothing is downloaded. Its confidence values are relative probabilities over the candidate
languages (they sum to 1), so ``language_score`` is how sure lingua is that the top language
beats the other candidates — near 1 for a paragraph, lower for a short line or mixed text.

Cost and accuracy levers (measured in ``benchmarks/bench_parsing.py language``; figures in
docs/language.md):

- ``max_chars``: only a prefix is classified. Time grows with length while accuracy saturates
  after a few hundred characters; a document that switches language after the prefix is labelled
  by its start.
- ``low_accuracy``: lingua's low-accuracy mode uses trigrams only: much less memory and load
  time, faster, and nearly as accurate above ~120 characters; it loses on short texts.
- ``languages``: restricting candidates makes loading and detection faster and removes
  confusions with languages the corpus cannot contain; a document in a language outside the list
  is forced onto the closest candidate (with a lower score), so keep the list honest.

Documents without letters (numbers, symbols, empty) get ``language = "unknown"`` and score 0.
The batched call (``compute_language_confidence_values_in_parallel``) runs on lingua's Rayon
thread pool; set ``RAYON_NUM_THREADS`` to bound it when several steps share a machine.
"""

from __future__ import annotations

import functools

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

UNKNOWN = "unknown"
LANGUAGE_FIELDS = [pa.field("language", pa.string()), pa.field("language_score", pa.float32())]


class LanguageIdParams(BaseModel):
    """How documents are labelled. Defaults: every lingua language, high accuracy, 2,000 chars."""

    languages: list[str] | None = Field(
        None,
        description="ISO 639-1 codes lingua may answer (at least two); None means all 75 it ships. "
        "A document in a language outside the list is labelled with the closest one.",
    )
    low_accuracy: bool = Field(
        False, description="lingua's low-accuracy mode: faster, less memory, weaker below ~120 characters."
    )
    max_chars: int | None = Field(
        2_000, description="Classify only this prefix of each document (None: the whole text)."
    )
    text_column: str = Field("text", description="The column to label.")


@functools.lru_cache(maxsize=4)
def _detector(languages: tuple[str, ...] | None, low_accuracy: bool):
    from lingua import IsoCode639_1, LanguageDetectorBuilder

    if languages is None:
        builder = LanguageDetectorBuilder.from_all_languages()
    else:
        codes = []
        for code in languages:
            try:
                codes.append(getattr(IsoCode639_1, code.upper()))
            except AttributeError as err:
                raise ValueError(f"lingua has no language {code!r}") from err
        if len(codes) < 2:
            raise ValueError("lingua needs at least two candidate languages")
        builder = LanguageDetectorBuilder.from_iso_codes_639_1(*codes)
    if low_accuracy:
        builder = builder.with_low_accuracy_mode()
    return builder.build()


def detector(params: LanguageIdParams):
    """The (cached) lingua detector for these parameters; models load lazily on first use."""
    languages = None if params.languages is None else tuple(sorted({c.lower() for c in params.languages}))
    return _detector(languages, params.low_accuracy)


def label_texts(texts: list[str], params: LanguageIdParams | None = None) -> tuple[list[str], list[float]]:
    """(languages, scores) for texts, in order; "unknown"/0.0 where lingua finds no language."""
    params = params or LanguageIdParams()
    if not texts:
        return [], []
    limit = params.max_chars
    prefixes = [t[:limit] if limit else t for t in texts]
    results = detector(params).compute_language_confidence_values_in_parallel(prefixes)
    languages, scores = [], []
    for values in results:
        if values and values[0].value > 0.0:
            languages.append(values[0].language.iso_code_639_1.name.lower())
            scores.append(float(values[0].value))
        else:
            languages.append(UNKNOWN)
            scores.append(0.0)
    return languages, scores


def label_batch(frame: pd.DataFrame, params: LanguageIdParams | None = None) -> pd.DataFrame:
    """The frame with ``language`` and ``language_score`` columns (replacing existing ones)."""
    params = params or LanguageIdParams()
    texts = frame[params.text_column].fillna("").astype(str).tolist()
    languages, scores = label_texts(texts, params)
    return frame.assign(
        language=pd.Series(languages, index=frame.index, dtype=object),
        language_score=pd.Series(scores, index=frame.index, dtype="float32"),
    )
