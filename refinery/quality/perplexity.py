"""Perplexity under a reference n-gram model, CCNet style (Wenzek et al., 2020).

A document's perplexity is ``10 ** (-Σ log10 p / N)`` over its normalized lines, each scored as a
sentence with begin/end markers, ``N`` counting every token plus one end marker per line (CCNet's
``DocLM``). Low perplexity means the text reads like the reference corpus. Documents fall into
``head``/``middle``/``tail`` buckets at cutoffs taken from the perplexity distribution of held-out
reference documents (the 33rd and 66th percentiles by default), and the stage can drop buckets or
everything above an absolute perplexity. Long documents also get a perplexity per paragraph, so a
reader can see which part of a mixed page is the noisy one.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator, model_validator

from refinery import markdown
from refinery.batch import BatchResult, Reason, split_batch
from refinery.metadata import FilePath, Json, Markdown
from refinery.quality.normalize import NORMALIZATION_VERSION, normalized_lines

BUCKETS = ("head", "middle", "tail")
PERPLEXITY_FIELDS = [
    pa.field("perplexity", pa.float64()),
    pa.field("perplexity_bucket", pa.string()),
    pa.field("perplexity_tokens", pa.int64()),
    pa.field("paragraph_perplexity", pa.list_(pa.float32())),
]


class PerplexityParams(BaseModel):
    """How ``perplexity_scored`` buckets and filters.

    Defaults are CCNet's: buckets at the 33rd/66th reference percentiles, every bucket kept (the
    bucket is a label that later selection and mixing use). ``drop_buckets: ["tail"]`` keeps head
    and middle only, as RedPajama-v1 did; ``max_perplexity`` drops above an absolute value."""

    bucket_percentiles: list[float] = Field(
        [33.0, 66.0],
        description="Two percentiles of the held-out reference perplexities: head ≤ first < middle ≤ "
        "second < tail.",
    )
    drop_buckets: list[str] = Field(
        [], description="Buckets to reject ('head', 'middle', 'tail'); [] keeps every bucket."
    )
    max_perplexity: float | None = Field(
        None, description="Reject documents above this absolute perplexity (None: no absolute limit)."
    )
    paragraph_detail_min_chars: int = Field(
        2000, description="Documents at least this long also get paragraph_perplexity (one per line)."
    )

    @field_validator("bucket_percentiles")
    @classmethod
    def _two_increasing(cls, value: list[float]) -> list[float]:
        if len(value) != 2 or not 0 < value[0] < value[1] < 100:
            raise ValueError(f"bucket_percentiles must be two increasing values in (0, 100), got {value}")
        return value

    @field_validator("drop_buckets")
    @classmethod
    def _known_buckets(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(BUCKETS))
        if unknown:
            raise ValueError(f"unknown buckets {unknown}; choose among {list(BUCKETS)}")
        return value

    @model_validator(mode="after")
    def _not_everything(self) -> PerplexityParams:
        if set(self.drop_buckets) == set(BUCKETS):
            raise ValueError("drop_buckets lists every bucket: the stage would reject every document")
        return self


def perplexity_of_lines(model: object, lines: Iterable[str]) -> tuple[float, int, list[float], list[int]]:
    """Σ log10 p, token count, and per-line (log10 p, tokens) for normalized lines."""
    score = model.score
    total, tokens = 0.0, 0
    line_scores: list[float] = []
    line_tokens: list[int] = []
    for line in lines:
        s = score(line, bos=True, eos=True)
        n = line.count(" ") + 2  # words + end of sentence
        total += s
        tokens += n
        line_scores.append(s)
        line_tokens.append(n)
    return total, tokens, line_scores, line_tokens


def document_perplexity(model: object, text: str) -> float:
    """Perplexity of one document (``nan`` when nothing is left after normalization)."""
    total, tokens, _, _ = perplexity_of_lines(model, normalized_lines(text))
    return 10.0 ** (-total / tokens) if tokens else math.nan


def percentile_table(perplexities: Sequence[float]) -> list[float]:
    """The 0th..100th percentiles (101 values) of finite perplexities: what buckets are cut from."""
    values = np.asarray([p for p in perplexities if math.isfinite(p)], dtype=float)
    if not len(values):
        raise ValueError("no finite perplexity to take percentiles from: the reference set is empty")
    return np.percentile(values, np.arange(101)).round(6).tolist()


def cutoffs_from_table(table: Sequence[float], percentiles: Sequence[float]) -> tuple[float, float]:
    """Perplexity cutoffs at the given percentiles, interpolated in a 101-value table."""
    if len(table) != 101:
        raise ValueError(f"a percentile table has 101 values (0..100), this one has {len(table)}")
    low, high = (float(np.interp(p, np.arange(101), table)) for p in percentiles)
    return low, high


def bucket_of(perplexity: float, cutoffs: tuple[float, float]) -> str:
    if perplexity <= cutoffs[0]:
        return "head"
    return "middle" if perplexity <= cutoffs[1] else "tail"


class PerplexityScorer:
    """Scores batches and decides per document; counts buckets across batches for the metadata."""

    def __init__(
        self,
        model: object,
        params: PerplexityParams,
        cutoffs: tuple[float, float],
        cutoffs_origin: str = "",
        model_info: dict | None = None,
    ):
        if not cutoffs[0] < cutoffs[1]:
            raise ValueError(f"bucket cutoffs must increase, got {cutoffs}")
        self.model = model
        self.params = params
        self.cutoffs = cutoffs
        self.cutoffs_origin = cutoffs_origin
        self.model_info = model_info or {}
        self.drop = frozenset(params.drop_buckets)
        self.buckets: Counter = Counter()

    @classmethod
    def for_model(cls, scoring: Any, params: PerplexityParams) -> PerplexityScorer:
        """A scorer for a :class:`refinery.quality.reference.ScoringLM` (model and cutoffs)."""
        cutoffs, origin = scoring.cutoffs(params.bucket_percentiles)
        return cls(scoring.lm.model, params, cutoffs, origin, scoring.provenance())

    def provenance(self) -> dict:
        """Stamped into the output files: which model, which cutoffs, which normalization."""
        return {
            "model": self.model_info,
            "bucket_cutoffs": list(self.cutoffs),
            "normalization": NORMALIZATION_VERSION,
        }

    def score(self, text: str) -> tuple[float, int, list[float] | None]:
        total, tokens, line_scores, line_tokens = perplexity_of_lines(self.model, normalized_lines(text))
        if not tokens:
            return math.nan, 0, None
        paragraphs = None
        if len(text) >= self.params.paragraph_detail_min_chars and len(line_scores) > 1:
            paragraphs = [10.0 ** (-s / n) for s, n in zip(line_scores, line_tokens, strict=True)]
        return 10.0 ** (-total / tokens), tokens, paragraphs

    def _reason(self, ppl: float, bucket: str | None) -> Reason:
        if bucket is None:
            return ("perplexity.no_tokens", "nothing left to score after normalization")
        limit = self.params.max_perplexity
        if limit is not None and ppl > limit:
            return ("perplexity.above_max", f"perplexity {ppl:.1f} > max_perplexity {limit:g}")
        if bucket in self.drop:
            lo, hi = self.cutoffs
            p_lo, p_hi = self.params.bucket_percentiles
            where = {
                "head": f"≤ {lo:.1f} (reference p{p_lo:g})",
                "middle": f"in ({lo:.1f}, {hi:.1f}] (reference p{p_lo:g}–p{p_hi:g})",
                "tail": f"> {hi:.1f} (reference p{p_hi:g})",
            }[bucket]
            return (f"perplexity.{bucket}", f"perplexity {ppl:.1f} {where}: bucket '{bucket}' is dropped")
        return None

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        perplexity, buckets, tokens, paragraphs, reasons = [], [], [], [], []
        for text in frame["text"].tolist():
            ppl, n, paras = self.score(text)
            bucket = bucket_of(ppl, self.cutoffs) if n else None
            perplexity.append(ppl)
            buckets.append(bucket)
            tokens.append(n)
            paragraphs.append(paras)
            reasons.append(self._reason(ppl, bucket))
        self.buckets.update(b or "none" for b in buckets)
        out = frame.assign(
            perplexity=perplexity,
            perplexity_bucket=buckets,
            perplexity_tokens=tokens,
            paragraph_perplexity=paragraphs,
        )
        return split_batch(out, reasons)

    def report(self) -> dict:
        lo, hi = self.cutoffs
        return {
            "model": Json(self.model_info),
            "model_path": FilePath(str(self.model_info.get("path", ""))),
            "model_sha256": self.model_info.get("sha256", ""),
            "bucket_cutoffs": Markdown(
                markdown.table(
                    ["bucket", "perplexity", "from"],
                    [
                        ("head", f"≤ {lo:.4g}", self.cutoffs_origin),
                        ("middle", f"≤ {hi:.4g}", self.cutoffs_origin),
                        ("tail", f"> {hi:.4g}", ""),
                    ],
                )
            ),
            "documents_by_bucket": Markdown(
                markdown.table(
                    ["bucket", "documents", "dropped"],
                    [(b, self.buckets.get(b, 0), b in self.params.drop_buckets) for b in BUCKETS],
                )
            ),
        }

    def summary(self) -> dict:
        return {"perplexity_buckets": dict(self.buckets)}

    def absorb(self, summary: dict) -> None:
        """Add another worker's bucket counts (the Ray engine scores slices in parallel)."""
        self.buckets.update(summary.get("perplexity_buckets", {}))
