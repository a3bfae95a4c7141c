"""Perplexity under a reference n-gram model, CCNet style (Wenzek et al., 2020).

A document's perplexity is ``10 ** (-Σ log10 p / N)`` over its normalized lines, each scored as a
sentence with begin/end markers, ``N`` counting every token plus one end marker per line (CCNet's
``DocLM``). Low perplexity means the text reads like the reference corpus. Long documents also
get a perplexity per paragraph, so a reader can see which part of a mixed page is the noisy one.

Documents fall into ``head``/``middle``/``tail`` buckets at two perplexity cutoffs, the 30th and
60th percentiles by default (CCNet's ``PerplexityBucket(percentile_head=30, percentile_tail=60)``),
of one of two distributions (``bucket_reference``):

- ``corpus`` (the default, CCNet's rule): the perplexities of the partition being scored. CCNet cuts
  at percentiles of the crawl itself (``cc_net/data/cutoff.csv``, one column per language, computed
  on a crawl snapshot), so head and middle are 30% each and tail 40% of the crawl, and
  ``drop_buckets: ["tail"]`` (RedPajama-v1) drops 40% of it. Here the cut is **per partition** (one
  source): a partition is materialized on its own, and a source arriving later must not move the
  buckets of sources already scored; a source is the closest thing to CCNet's pool (one language of
  one snapshot). The stage scores every document once (a first pass), summarizes the scores in a
  mergeable quantile sketch (:class:`refinery.quantiles.QuantileSketch`, relative accuracy
  ``bucket_relative_accuracy``, 0.1% by default: each cut-off lies within 0.1% of the exact
  percentile), then decides from the scores it kept. On the local engine the scores stay in this
  process (about 28 bytes per document, never the texts); on the Ray engine each worker writes its
  slice's scores as a part and returns the slice's sketch, the driver adds the sketches, and the
  second pass reads each slice's scores back instead of scoring again. Both engines cut from the
  same merged sketch, so they decide every row alike. A partition's buckets say how a document
  ranks *within its source*; they do not compare sources.
- ``reference``: the perplexities of held-out reference documents (``reference_lm`` records them). The
  cut is the same for every partition, so buckets compare sources, but on crawl data most documents
  are worse than the reference's 60th percentile: head and middle come out far smaller than 30% each
  and ``drop_buckets: ["tail"]`` drops far more than 40%.

The stage can drop buckets or everything above an absolute perplexity (``max_perplexity``).
"""

from __future__ import annotations

import math
import time
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field, field_validator, model_validator

from refinery import markdown
from refinery.batch import BatchResult, Reason, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.metadata import FilePath, Json, Markdown
from refinery.quality.normalize import NORMALIZATION_VERSION, normalized_lines
from refinery.quantiles import DEFAULT_RELATIVE_ACCURACY, QuantileSketch

BUCKETS = ("head", "middle", "tail")
DEFAULT_BUCKET_PERCENTILES = (30.0, 60.0)  # CCNet's PerplexityBucket(percentile_head=30, percentile_tail=60)
PERPLEXITY_FIELDS = [
    pa.field("perplexity", pa.float64()),
    pa.field("perplexity_bucket", pa.string()),
    pa.field("perplexity_tokens", pa.int64()),
    pa.field("paragraph_perplexity", pa.list_(pa.float32())),
]


class PerplexityParams(BaseModel):
    """How ``perplexity_scored`` buckets and filters.

    Defaults are CCNet's: buckets at the 30th/60th percentiles of the scored documents' own
    perplexities (per partition, see the module docstring), every bucket kept (the bucket is a label
    that later selection and mixing use). ``drop_buckets: ["tail"]`` keeps head and middle only, as
    RedPajama-v1 did; ``max_perplexity`` drops above an absolute value."""

    bucket_reference: Literal["corpus", "reference"] = Field(
        "corpus",
        description="Whose perplexities the bucket percentiles are taken from: 'corpus', this partition's "
        "(CCNet: 30/30/40% of the source), or 'reference', the held-out reference documents' (the same "
        "cut for every source; on crawl data most documents land in the tail).",
    )
    bucket_percentiles: list[float] = Field(
        list(DEFAULT_BUCKET_PERCENTILES),
        description="Two percentiles of that distribution: head ≤ first < middle ≤ second < tail "
        "(CCNet: 30, 60).",
    )
    drop_buckets: list[str] = Field(
        [], description="Buckets to reject ('head', 'middle', 'tail'); [] keeps every bucket."
    )
    max_perplexity: float | None = Field(
        None, description="Reject documents above this absolute perplexity (None: no absolute limit)."
    )
    bucket_relative_accuracy: float = Field(
        DEFAULT_RELATIVE_ACCURACY,
        gt=0,
        le=0.05,
        description="With bucket_reference 'corpus': the relative accuracy of the quantile sketch the "
        "partition's cut-offs come from (each cut-off within this share of the exact percentile; only "
        "documents that close to a cut-off can land in the neighbouring bucket). Smaller is closer and "
        "makes the per-part sketches larger.",
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


# Percentiles shown for a score distribution (perplexities, classifier scores); 30/60 are the cuts.
SHOWN_PERCENTILES = (1, 5, 10, 25, 30, 50, 60, 75, 90, 95, 99)


def percentile_markdown(table: Sequence[float], fmt: str = "{:.4g}") -> str:
    """Selected rows of a 101-value percentile table."""
    return markdown.table(
        ["percentile", "value"], [(f"p{p}", fmt.format(table[p])) for p in SHOWN_PERCENTILES]
    )


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


@dataclass
class PartitionScores:
    """Every document's score from a first pass over a partition, in reading order: what a cut at
    the partition's own percentiles needs before any document can be decided. Compact arrays (about
    28 bytes per document, plus 4 per line of documents long enough for paragraph detail), never the
    texts, so a partition of any size is scored in bounded memory."""

    perplexity: array  # 'd': nan where nothing was left to score
    tokens: array  # 'q'
    id_hashes: array  # 'Q': to check that the second pass reads the same rows in the same order
    paragraph_offsets: array  # 'q', rows + 1 entries: row i's paragraphs are values[off[i]:off[i+1]]
    paragraph_values: array  # 'f'
    has_paragraphs: array  # 'b'
    seconds: float = 0.0

    @classmethod
    def empty(cls) -> PartitionScores:
        return cls(array("d"), array("q"), array("Q"), array("q", [0]), array("f"), array("b"))

    def __len__(self) -> int:
        return len(self.perplexity)

    def finite(self) -> np.ndarray:
        values = np.frombuffer(self.perplexity, dtype=np.float64) if len(self) else np.zeros(0)
        return values[np.isfinite(values)]

    def append(self, doc_id: object, perplexity: float, tokens: int, paragraphs: list[float] | None) -> None:
        self.perplexity.append(perplexity)
        self.tokens.append(tokens)
        self.id_hashes.append(_id_hash(doc_id))
        self.has_paragraphs.append(paragraphs is not None)
        if paragraphs is not None:
            self.paragraph_values.extend(paragraphs)
        self.paragraph_offsets.append(len(self.paragraph_values))

    @classmethod
    def from_table(cls, table: pa.Table) -> PartitionScores:
        """One slice's scores as a first pass on a worker wrote them (:func:`score_table_function`)."""
        scores = cls.empty()
        columns = [table.column(c).to_pylist() for c in SCORE_PART_COLUMNS]
        for doc_id, ppl, tokens, paragraphs in zip(*columns, strict=True):
            scores.append(doc_id, math.nan if ppl is None else ppl, tokens, paragraphs)
        return scores


SCORE_PART_COLUMNS = ("id", "perplexity", "perplexity_tokens", "paragraph_perplexity")
SCORE_PART_SCHEMA = pa.schema(
    [
        pa.field("id", pa.string()),
        pa.field("perplexity", pa.float64()),
        pa.field("perplexity_tokens", pa.int64()),
        pa.field("paragraph_perplexity", pa.list_(pa.float32())),
    ]
)


def _id_hash(doc_id: object) -> int:
    return hash(str(doc_id)) & 0xFFFF_FFFF_FFFF_FFFF  # within one process: both passes agree


class PerplexityScorer(StageProcessor):
    """Scores batches and decides per document; counts buckets across batches for the metadata.

    With ``cutoffs=None`` the cut comes from the partition itself: call :meth:`prescore` with the
    partition's batches first (``for_model`` does), then run the stage over the same partition.
    """

    def __init__(
        self,
        model: object,
        params: PerplexityParams,
        cutoffs: tuple[float, float] | None,
        cutoffs_origin: str = "",
        model_info: dict | None = None,
    ):
        if cutoffs is not None and not cutoffs[0] <= cutoffs[1]:
            raise ValueError(f"bucket cutoffs must increase, got {cutoffs}")
        self.model = model
        self.params = params
        self.cutoffs = cutoffs
        self.cutoffs_origin = cutoffs_origin
        self.model_info = model_info or {}
        self.drop = frozenset(params.drop_buckets)
        self.buckets: Counter = Counter()
        self.prescored: PartitionScores | None = None
        self.partition_percentiles: list[float] | None = None
        self.warnings: list[str] = []
        self._offset = 0
        self.score_parts: ScoreParts | None = None  # a worker's second pass: its slice's scores
        self._part: int | None = None
        self.first_pass: dict = {}
        # Documents the model scored while their rows were decided: 0 when a first pass's scores
        # are read back (scored once), every document when there is no first pass.
        self.scored_while_deciding = 0

    @classmethod
    def for_model(
        cls,
        scoring: Any,
        params: PerplexityParams,
        partition: Iterable[pd.DataFrame] | Callable[[], Iterable[pd.DataFrame]] | None = None,
    ) -> PerplexityScorer:
        """A scorer for a :class:`refinery.quality.reference.ScoringLM` (model and cutoffs).

        ``partition`` (the upstream partition's batches with ``id`` and ``text``, or a function
        returning them) is read only when ``bucket_reference`` is ``corpus``: that is the first pass.
        """
        if params.bucket_reference == "reference":
            cutoffs, origin = scoring.cutoffs(params.bucket_percentiles)
            return cls(scoring.lm.model, params, cutoffs, origin, scoring.provenance())
        scorer = cls.uncut(scoring, params)
        if partition is None:
            raise ValueError("bucket_reference 'corpus' needs the partition's batches for its first pass")
        scorer.prescore(partition() if callable(partition) else partition)
        return scorer

    @classmethod
    def with_cutoffs(
        cls, scoring: Any, params: PerplexityParams, cutoffs: Sequence[float] | None, origin: str
    ) -> PerplexityScorer:
        """A scorer whose cutoffs were already taken (a worker of a partition split over many;
        None when no document of the partition had anything to score)."""
        cut = (float(cutoffs[0]), float(cutoffs[1])) if cutoffs else None
        return cls(scoring.lm.model, params, cut, origin, scoring.provenance())

    @classmethod
    def uncut(cls, scoring: Any, params: PerplexityParams) -> PerplexityScorer:
        """A corpus-cut scorer before its first pass: :meth:`cut_from` then takes the cutoffs."""
        scorer = cls(scoring.lm.model, params, None, "", scoring.provenance())
        if getattr(scoring, "fixed_cutoffs", None) is not None:
            scorer.warnings.append(
                f"the kenlm resource's bucket_cutoffs {list(scoring.fixed_cutoffs)} are not used: "
                "bucket_reference is 'corpus', so the buckets are cut at this partition's own percentiles "
                "(set bucket_reference: reference to use fixed cutoffs)"
            )
        return scorer

    def cut_from(self, sketch: QuantileSketch) -> None:
        """Take the corpus cut from a quantile sketch of the partition's perplexities (merged from
        the parts a first pass wrote, or made from the scores kept here)."""
        if sketch.count:
            self.cutoffs = tuple(sketch.percentiles(self.params.bucket_percentiles))
            self.partition_percentiles = [round(v, 6) for v in sketch.percentiles(range(101))]
        p_lo, p_hi = self.params.bucket_percentiles
        self.cutoffs_origin = (
            f"p{p_lo:g}/p{p_hi:g} of this partition's {sketch.count} scored documents "
            f"(bucket_reference: corpus; quantile sketch, cut-offs within "
            f"{sketch.relative_accuracy:.2%} of the exact percentiles)"
        )

    def sketch(self) -> QuantileSketch:
        return QuantileSketch(self.params.bucket_relative_accuracy)

    def read_scores(self, parts: ScoreParts) -> None:
        """Decide from the scores a first pass wrote per slice (a worker of a split partition)."""
        self.score_parts = parts

    def perplexities(self, frame: pd.DataFrame) -> np.ndarray:
        """The perplexity of every document of a batch (NaN where nothing is left to score)."""
        return np.asarray([self.score(text)[0] for text in frame["text"].tolist()], dtype=np.float64)

    def prescore(self, batches: Iterable[pd.DataFrame]) -> PartitionScores:
        """First pass: score every document, keep the scores, cut at their percentiles."""
        started = time.perf_counter()
        scores = PartitionScores.empty()
        for frame in batches:
            for doc_id, text in zip(frame["id"].tolist(), frame["text"].tolist(), strict=True):
                scores.append(doc_id, *self.score(text))
        scores.seconds = time.perf_counter() - started
        self.prescored, self._offset = scores, 0
        self.cut_from(self.sketch().add(scores.finite()))
        self.first_pass = {"where": "this process", "seconds": round(scores.seconds, 3)}
        return scores

    def provenance(self) -> dict:
        """Stamped into the output files: which model, which cutoffs, which normalization."""
        return {
            "model": self.model_info,
            "bucket_reference": self.params.bucket_reference,
            "bucket_percentiles": list(self.params.bucket_percentiles),
            "bucket_cutoffs": list(self.cutoffs) if self.cutoffs else None,
            "bucket_cutoffs_origin": self.cutoffs_origin,
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
            whose = "partition" if self.params.bucket_reference == "corpus" else "reference"
            where = {
                "head": f"≤ {lo:.1f} ({whose} p{p_lo:g})",
                "middle": f"in ({lo:.1f}, {hi:.1f}] ({whose} p{p_lo:g}–p{p_hi:g})",
                "tail": f"> {hi:.1f} ({whose} p{p_hi:g})",
            }[bucket]
            return (f"perplexity.{bucket}", f"perplexity {ppl:.1f} {where}: bucket '{bucket}' is dropped")
        return None

    def _scored(self, frame: pd.DataFrame) -> Iterator[tuple[float, int, list[float] | None]]:
        """This batch's scores: from the first pass when there was one (checked row by row), else now."""
        if self.score_parts is not None:
            self._load_slice_scores()
        scores = self.prescored
        if scores is None:
            self.scored_while_deciding += len(frame)
            for text in frame["text"].tolist():
                yield self.score(text)
            return
        for doc_id in frame["id"].tolist():
            i = self._offset
            if i >= len(scores) or scores.id_hashes[i] != _id_hash(doc_id):
                raise RuntimeError(
                    f"the partition changed between the two passes of perplexity_scored (row {i}, id "
                    f"{doc_id!r}): run the stage again"
                )
            self._offset += 1
            paragraphs = None
            if scores.has_paragraphs[i]:
                start, stop = scores.paragraph_offsets[i], scores.paragraph_offsets[i + 1]
                paragraphs = scores.paragraph_values[start:stop].tolist()
            yield scores.perplexity[i], scores.tokens[i], paragraphs

    def _load_slice_scores(self) -> None:
        index = self.score_parts.current()
        if index != self._part:
            self.prescored, self._offset, self._part = self.score_parts.read(index), 0, index

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        perplexity, buckets, tokens, paragraphs, reasons = [], [], [], [], []
        for ppl, n, paras in self._scored(frame):
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
        scored = sum(self.buckets.get(b, 0) for b in BUCKETS)
        if self.cutoffs is None:
            cutoffs = Markdown("_no document had anything to score: no cutoffs_")
        else:
            lo, hi = self.cutoffs
            cutoffs = Markdown(
                markdown.table(
                    ["bucket", "perplexity", "from"],
                    [
                        ("head", f"≤ {lo:.4g}", self.cutoffs_origin),
                        ("middle", f"≤ {hi:.4g}", self.cutoffs_origin),
                        ("tail", f"> {hi:.4g}", ""),
                    ],
                )
            )
        out = {
            "model": Json(self.model_info),
            "model_path": FilePath(str(self.model_info.get("path", ""))),
            "model_sha256": self.model_info.get("sha256", ""),
            "bucket_reference": self.params.bucket_reference,
            "bucket_cutoffs": cutoffs,
            "documents_by_bucket": Markdown(
                markdown.table(
                    ["bucket", "documents", "share", "dropped"],
                    [
                        (
                            b,
                            self.buckets.get(b, 0),
                            f"{self.buckets.get(b, 0) / scored:.1%}" if scored else "",
                            b in self.params.drop_buckets,
                        )
                        for b in BUCKETS
                    ],
                )
            ),
        }
        if self.partition_percentiles is not None:
            out["partition_perplexity_percentiles"] = Markdown(
                percentile_markdown(self.partition_percentiles)
            )
        if self.first_pass:
            out["first_pass"] = Json({**self.first_pass, "scored_again": self.scored_while_deciding})
            out["first_pass_seconds"] = self.first_pass["seconds"]
        return out

    def summary(self) -> dict:
        return {
            "perplexity_buckets": dict(self.buckets),
            "bucket_reference": self.params.bucket_reference,
            "bucket_cutoffs": list(self.cutoffs) if self.cutoffs else None,
            "partition_perplexity_percentiles": self.partition_percentiles,
            "scored_while_deciding": self.scored_while_deciding,
        }

    def absorb(self, summary: dict) -> None:
        """Add another worker's bucket counts (the Ray engine scores slices in parallel)."""
        self.buckets.update(summary.get("perplexity_buckets", {}))
        self.scored_while_deciding += summary.get("scored_while_deciding", 0)


@dataclass
class ScoreParts:
    """The first pass's scores, one part per slice (``part-<slice>.parquet`` in ``folder``), read
    back a slice at a time by the worker deciding that slice; ``current()`` says which slice that
    is (the engine's :func:`refinery.engine.slices.current_slice`)."""

    folder: str
    current: Callable[[], int]

    def read(self, index: int) -> PartitionScores:
        # Through the folder's own filesystem: on an object-store root ``folder`` is a URI with its
        # query (endpoint, region), which a path string joined by hand would lose.
        from refinery.engine.root_folder import RootFolder

        table = RootFolder(self.folder).read_table(
            f"part-{index:05d}.parquet", columns=list(SCORE_PART_COLUMNS)
        )
        return PartitionScores.from_table(table)


def score_table_function(
    load: Callable[[], Any], params: PerplexityParams
) -> Callable[[pd.DataFrame], pa.Table]:
    """What a worker of the first pass runs: the model loaded once (``load`` gives the ScoringLM),
    then one batch of ``id``, ``text`` at a time into its score columns (``SCORE_PART_SCHEMA``)."""
    scorer = PerplexityScorer.uncut(load(), params)

    def scores(frame: pd.DataFrame) -> pa.Table:
        rows = [scorer.score(text) for text in frame["text"].tolist()]
        return pa.table(
            {
                "id": [str(i) for i in frame["id"].tolist()],
                "perplexity": [r[0] for r in rows],
                "perplexity_tokens": [r[1] for r in rows],
                "paragraph_perplexity": [r[2] for r in rows],
            },
            schema=SCORE_PART_SCHEMA,
        )

    return scores


def score_sketch(relative_accuracy: float, table: pa.Table) -> dict:
    """A part's summary for the driver: the quantile sketch of its perplexities (NaN skipped)."""
    values = table.column("perplexity").to_numpy(zero_copy_only=False)
    return QuantileSketch.of(values.astype(np.float64), relative_accuracy).to_dict()
