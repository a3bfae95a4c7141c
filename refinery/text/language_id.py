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

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field

from refinery.text.language_models import UNKNOWN, Labeller, LanguageModel, labeller  # noqa: F401 (UNKNOWN: re-exported)

DEFAULT_MODEL = "fasttext"
DEFAULT_MAX_CHARS = 400
LANGUAGE_FIELDS = [pa.field("language", pa.string()), pa.field("language_score", pa.float32())]


class LanguageIdParams(BaseModel):
    """How documents are labelled. Defaults: every lingua language, low-accuracy mode, the first
    1,000 characters. On Debian's translated man pages (24 languages) that labels 99.1 % of pages
    and 95.3 % of paragraphs right at ~230 pages/s per core, and loads in ~1 s with ~140 MB;
    high-accuracy mode gives 99.1 % / 97.1 % but loads for ~18 s of CPU and holds ~1.1 GB in every
    process (docs/language.md)."""

    model: LanguageModel = Field(
        DEFAULT_MODEL,
        description="Which identifier labels: 'lingua' (75 languages), 'fasttext' (lid.176.ftz, 176) or "
        "'cld3' (107). Measured side by side in docs/language.md.",
    )
    languages: list[str] | None = Field(
        None,
        description="ISO 639-1 codes the model may answer (at least two); None means all 75 it ships. "
        "A document in a language outside the list is labelled with the closest one.",
    )
    low_accuracy: bool = Field(
        True,
        description="lingua's low-accuracy mode (trigrams only): as accurate on documents, ~2 points "
        "worse on short paragraphs, 1 s / 140 MB to load instead of 18 s / 1.1 GB. False for short texts.",
    )
    max_chars: int | None = Field(
        DEFAULT_MAX_CHARS,
        description="Classify only this prefix of each document (None: the whole text). Pages: 99.1 % "
        "right at 1,000 and 500 characters, 99.2 % at 2,000 (1.6x slower), 95.9 % at 200.",
    )
    text_column: str = Field("text", description="The column to label.")


def detector(params: LanguageIdParams) -> Labeller:
    """The (cached) model for these parameters; lingua loads its languages lazily on first use."""
    languages = None if params.languages is None else tuple(sorted({c.lower() for c in params.languages}))
    lingua = params.model == "lingua"
    return labeller(
        params.model,
        languages,
        params.low_accuracy if lingua else False,
        params.max_chars if params.model == "cld3" else None,
    )


def label_texts(texts: list[str], params: LanguageIdParams | None = None) -> tuple[list[str], list[float]]:
    """(languages, scores) for texts, in order; "unknown"/0.0 where the model finds no language."""
    params = params or LanguageIdParams()
    if not texts:
        return [], []
    limit = params.max_chars
    prefixes = [t[:limit] if limit else t for t in texts]
    return detector(params).label(prefixes)


class LanguageLabelParams(BaseModel):
    """The language-label settings of a stage that labels as it goes (clean_documents): the
    fields of :class:`LanguageIdParams`, named so they read clearly beside the stage's own."""

    label_language: bool = Field(
        True,
        description="Add language and language_score (off: both null, and heuristic_filtered's "
        "English gate decides).",
    )
    language_model: LanguageModel = Field(
        DEFAULT_MODEL, description="'lingua', 'fasttext' (lid.176.ftz) or 'cld3' (docs/language.md)."
    )
    language_candidates: list[str] | None = Field(
        None, description="ISO 639-1 codes the model may answer (at least two; not with cld3); None: all."
    )
    language_low_accuracy: bool = Field(
        True, description="lingua's low-accuracy (trigram) mode (lingua only)."
    )
    language_max_chars: int | None = Field(
        DEFAULT_MAX_CHARS, description="Classify only this prefix of each document (None: the whole text)."
    )

    def language_id(self) -> LanguageIdParams | None:
        if not self.label_language:
            return None
        return LanguageIdParams(
            model=self.language_model,
            languages=self.language_candidates,
            low_accuracy=self.language_low_accuracy,
            max_chars=self.language_max_chars,
        )


def label_batch(frame: pd.DataFrame, params: LanguageIdParams | None = None) -> pd.DataFrame:
    """The frame with ``language`` and ``language_score`` columns (replacing existing ones)."""
    params = params or LanguageIdParams()
    column = frame[params.text_column].fillna("")
    if params.max_chars and len(column) and column.dtype == _STR_DTYPE:
        # The prefixes cut in Arrow (code points, as Python slices): the rest of each text is
        # never turned into a Python string.
        prefixes = pc.utf8_slice_codeunits(pa.array(column), 0, params.max_chars).to_pylist()
        languages, scores = detector(params).label(prefixes)
    else:
        languages, scores = label_texts(column.astype(str).tolist(), params)
    return frame.assign(
        language=pd.Series(languages, index=frame.index, dtype=object),
        language_score=pd.Series(scores, index=frame.index, dtype="float32"),
    )


_STR_DTYPE = pd.Series(["text"]).dtype  # what a column built from a list of strings is
