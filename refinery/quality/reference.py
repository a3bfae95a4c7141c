"""The reference corpus, and the n-gram model trained on it (``reference_lm``).

The reference corpus is text of the quality we want more of (CCNet used Wikipedia). It lives in
the inbox as its own kind, ``inbox/reference/<name>/``, in any format the text reader accepts.
A stable, hash-chosen share of its documents is held out of training; their perplexities under
the trained model give the percentile table that ``perplexity_scored`` cuts its buckets from when
``bucket_reference`` is ``reference`` (scoring the training documents themselves would make every
cutoff too low). By default (``corpus``) the stage cuts at the scored partition's own percentiles
instead, as CCNet does; see :mod:`refinery.quality.perplexity`.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, Field

from refinery import markdown
from refinery.ingest.text_reader import SourceReader
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown
from refinery.names import REFERENCE_LM
from refinery.paths import Layout
from refinery.quality.artifacts import CURRENT, ModelArtifact, current, models_dir, publish, write_json
from refinery.quality.ngram_lm import LmplzOptions, build_binary, load_language_model, train_arpa
from refinery.quality.normalize import NORMALIZATION_VERSION, normalized_lines
from refinery.quality.perplexity import (
    DEFAULT_BUCKET_PERCENTILES,
    SHOWN_PERCENTILES,  # noqa: F401 (re-exported: the classifier's report shows them too)
    cutoffs_from_table,
    document_perplexity,
    percentile_markdown,
    percentile_table,
)
from refinery.tempfiles import staging_dir

REFERENCE_KIND = "reference"
DEFAULT_REFERENCE_SOURCE = "curated"
MIN_TRAINING_TOKENS = 2_000


class ReferenceLMParams(BaseModel):
    """How ``reference_lm`` trains. The order itself is the kenlm resource's, so training and
    scoring can never disagree about it."""

    reference_source: str = Field(
        DEFAULT_REFERENCE_SOURCE, description="Folder under inbox/reference/ holding the reference corpus."
    )
    heldout_fraction: float = Field(
        0.1, gt=0, lt=0.5, description="Share of reference documents kept out of training for percentiles."
    )
    memory: str = Field("1G", description="lmplz -S sorting memory (e.g. '1G', '20%').")
    discount_fallback: bool = Field(
        True, description="Let lmplz fall back to fixed discounts where modified Kneser-Ney estimation fails."
    )
    prune: list[int] = Field([], description="lmplz --prune thresholds per order ([] keeps every n-gram).")


class ReferenceCorpusError(ValueError):
    """The reference corpus is missing or too small to train on."""


@dataclass
class ReferenceCorpus:
    source: str
    folder: Path
    documents: list[tuple[str, str]]  # (id, text) in reading order
    quarantined: int = 0
    quarantine_reasons: dict[str, int] = field(default_factory=dict)

    @property
    def chars(self) -> int:
        return sum(len(t) for _, t in self.documents)


def read_reference(layout: Layout, source: str) -> ReferenceCorpus:
    """Every document of ``inbox/reference/<source>/``; unreadable records are counted, not used."""
    folder = layout.inbox_source(REFERENCE_KIND, source)
    if not folder.is_dir():
        raise ReferenceCorpusError(
            f"no reference corpus at {folder}: put high-quality text there (*.jsonl, *.jsonl.gz, *.parquet "
            "or *.txt, as for the text inbox), or build the bundled one with "
            "refinery.sample.reference_sample.build_reference_sample"
        )
    reader = SourceReader(folder, source)
    documents: list[tuple[str, str]] = []
    for batch in reader.batches():
        documents.extend((d["id"], d["text"]) for d in batch.documents)
    if not documents:
        raise ReferenceCorpusError(f"the reference corpus at {folder} holds no readable document")
    return ReferenceCorpus(source, folder, documents, reader.stats.quarantined, dict(reader.stats.reasons))


def is_heldout(doc_id: str, fraction: float, salt: str = "reference") -> bool:
    """Stable membership of the held-out share: the same documents whatever the order or machine."""
    digest = hashlib.blake2b(f"{salt}:{doc_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < fraction


def split_reference(
    corpus: ReferenceCorpus, fraction: float, salt: str = "reference"
) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(training, held-out) documents; each side gets at least one document."""
    train = [d for d in corpus.documents if not is_heldout(d[0], fraction, salt)]
    heldout = [d for d in corpus.documents if is_heldout(d[0], fraction, salt)]
    if not heldout and len(train) > 1:
        heldout, train = train[-1:], train[:-1]
    if not train:
        train, heldout = heldout[:-1], heldout[-1:]
    if not train or not heldout:
        raise ReferenceCorpusError(
            f"the reference corpus '{corpus.source}' has {len(corpus.documents)} document(s): at least "
            "two are needed (one to train on, one held out for the bucket percentiles)"
        )
    return train, heldout


def write_training_corpus(documents: list[tuple[str, str]], path: Path) -> tuple[int, int]:
    """One normalized line per line, as lmplz reads it; returns (lines, tokens)."""
    lines = tokens = 0
    with path.open("w", encoding="utf-8") as fh:
        for _, text in documents:
            for line in normalized_lines(text):
                fh.write(line)
                fh.write("\n")
                lines += 1
                tokens += line.count(" ") + 1
    return lines, tokens


@dataclass
class ReferenceLMResult:
    artifact: ModelArtifact
    corpus: ReferenceCorpus
    train_documents: int
    heldout_documents: int
    train_lines: int
    train_tokens: int
    ngram_counts: dict[int, int]
    percentiles: list[float]
    seconds: float
    trained: bool = True  # False when an existing model was registered instead
    order: int = 5
    params: ReferenceLMParams | None = None

    def report(self) -> dict:
        """What reference_lm shows: the model file, the data it learned from, its percentiles."""
        artifact, corpus = self.artifact, self.corpus
        return {
            "model_path": FilePath.of(artifact.path),
            "model_sha256": artifact.sha256,
            "order": self.order,
            "trained": self.trained,
            "normalization": NORMALIZATION_VERSION,
            "reference": FilePath.of(corpus.folder),
            "reference_documents": len(corpus.documents),
            "reference_chars": corpus.chars,
            "reference_quarantined": corpus.quarantined,
            "train_documents": self.train_documents,
            "heldout_documents": self.heldout_documents,
            "train_lines": self.train_lines,
            "train_tokens": self.train_tokens,
            "ngram_counts": Markdown(
                markdown.table(["order", "n-grams"], sorted(self.ngram_counts.items()))
                if self.ngram_counts
                else "_external model_"
            ),
            "reference_perplexity_percentiles": Markdown(percentile_markdown(self.percentiles)),
            "parameters": Json(self.params.model_dump() if self.params else {}),
            "seconds": round(self.seconds, 3),
        }

    def checks(self) -> list[CheckOutcome]:
        """The reference percentiles give usable cuts for ``bucket_reference: reference``: finite,
        and increasing at the default percentiles (p30 < p60)."""
        pct = self.percentiles
        finite = all(math.isfinite(v) for v in pct)
        lo, hi = (int(p) for p in DEFAULT_BUCKET_PERCENTILES)
        return [
            CheckOutcome(
                "bucket_cutoffs_increase",
                finite and pct[lo] < pct[hi],
                {f"p{lo}": pct[lo], f"p{hi}": pct[hi]},
            )
        ]


def _heldout_percentiles(model_path: Path, order: int, heldout: list[tuple[str, str]]) -> list[float]:
    lm = load_language_model(model_path, order)
    return percentile_table([document_perplexity(lm.model, text) for _, text in heldout])


def train_reference_lm(layout: Layout, params: ReferenceLMParams, order: int) -> ReferenceLMResult:
    """Train an ``order``-gram model on the reference corpus and publish it under models/reference_lm."""
    started = time.perf_counter()
    corpus = read_reference(layout, params.reference_source)
    train, heldout = split_reference(corpus, params.heldout_fraction)
    out_dir = models_dir(layout.home, REFERENCE_LM)
    out_dir.mkdir(parents=True, exist_ok=True)
    with staging_dir(out_dir, "train") as temp:
        text_path, arpa, binary = (
            Path(temp) / "corpus.txt",
            Path(temp) / "model.arpa",
            Path(temp) / "model.bin",
        )
        lines, tokens = write_training_corpus(train, text_path)
        if tokens < MIN_TRAINING_TOKENS:
            raise ReferenceCorpusError(
                f"the reference corpus '{corpus.source}' gives {tokens} training tokens; a {order}-gram "
                f"model needs at least {MIN_TRAINING_TOKENS} (add text to {corpus.folder})"
            )
        options = LmplzOptions(order, params.memory, params.discount_fallback, tuple(params.prune))
        counts = train_arpa(text_path, arpa, options)
        build_binary(arpa, binary)
        percentiles = _heldout_percentiles(binary, order, heldout)
        info = {
            "kind": "kenlm",
            "format": "binary",
            "order": order,
            "normalization": NORMALIZATION_VERSION,
            "source": corpus.source,
            "percentiles": percentiles,
            "percentiles_from": f"{len(heldout)} held-out reference documents",
            "train_documents": len(train),
            "heldout_documents": len(heldout),
            "train_lines": lines,
            "train_tokens": tokens,
            "ngram_counts": {str(k): v for k, v in counts.items()},
            "lmplz": {
                "memory": params.memory,
                "discount_fallback": params.discount_fallback,
                "prune": params.prune,
            },
        }
        artifact = publish(out_dir, f"{REFERENCE_LM}-o{order}", binary, ".binary", info)
    return ReferenceLMResult(
        artifact,
        corpus,
        len(train),
        len(heldout),
        lines,
        tokens,
        counts,
        percentiles,
        time.perf_counter() - started,
        order=order,
        params=params,
    )


def register_external_lm(
    layout: Layout, params: ReferenceLMParams, model_path: str | Path, order: int
) -> ReferenceLMResult:
    """Adopt a user-given model as the reference model: check it, and take the bucket percentiles
    from its perplexities on the whole reference corpus (it was not trained on it here).

    The model file stays where it is; models/reference_lm/current.json records its path and hash,
    so the scored partitions and the lineage name the model that really scored them.
    """
    started = time.perf_counter()
    lm = load_language_model(model_path, order)
    corpus = read_reference(layout, params.reference_source)
    percentiles = percentile_table([document_perplexity(lm.model, t) for _, t in corpus.documents])
    out_dir = models_dir(layout.home, REFERENCE_LM)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "kind": "kenlm",
        "format": lm.format,
        "order": lm.order,
        "normalization": "external (must match refinery.quality.normalize to be meaningful)",
        "source": corpus.source,
        "external_path": str(lm.path),
        "percentiles": percentiles,
        "percentiles_from": f"all {len(corpus.documents)} reference documents (external model)",
    }
    write_json(out_dir / CURRENT, {**record, "file": str(lm.path), "sha256": lm.sha256})
    artifact = ModelArtifact(lm.path, lm.sha256, {**record, "sha256": lm.sha256})
    return ReferenceLMResult(
        artifact,
        corpus,
        0,
        len(corpus.documents),
        0,
        0,
        {},
        percentiles,
        time.perf_counter() - started,
        trained=False,
        order=order,
        params=params,
    )


@dataclass(frozen=True)
class ScoringLM:
    """The model ``perplexity_scored`` uses, and where its bucket cutoffs come from."""

    lm: object  # LanguageModel
    percentiles: list[float] | None
    fixed_cutoffs: tuple[float, float] | None
    origin: str  # 'reference_lm' or 'external'

    def cutoffs(self, bucket_percentiles: list[float]) -> tuple[tuple[float, float], str]:
        """(head_max, middle_max) perplexities for ``bucket_reference: reference``, and a sentence
        saying where they come from."""
        if self.fixed_cutoffs is not None:
            return self.fixed_cutoffs, "bucket_cutoffs of the kenlm resource"
        if self.percentiles is None:
            raise ValueError(
                f"no reference bucket cutoffs for {getattr(self.lm, 'path', 'this model')}: set the kenlm "
                "resource's bucket_cutoffs to [head_max, middle_max] perplexities, or materialize "
                "reference_lm with this model_path so it records the model's percentiles on the reference "
                "corpus, or cut at the partition's own percentiles (bucket_reference: corpus)"
            )
        low, high = cutoffs_from_table(self.percentiles, bucket_percentiles)
        return (low, high), (
            f"p{bucket_percentiles[0]:g}/p{bucket_percentiles[1]:g} of the reference perplexities "
            "recorded by reference_lm"
        )

    def provenance(self) -> dict:
        return {**self.lm.describe(), "origin": self.origin}


def scoring_lm(
    layout: Layout, model_path: str, order: int, bucket_cutoffs: list[float] | None = None
) -> ScoringLM:
    """The model to score with: reference_lm's current one, or a user-given file.

    Cutting buckets at reference percentiles with a user-given model needs cutoffs: either given
    explicitly, or the percentiles ``reference_lm`` recorded when it registered that very file (same
    content hash); :meth:`ScoringLM.cutoffs` says so when neither exists. The default cut (the
    partition's own percentiles) needs neither.
    """
    fixed = None
    if bucket_cutoffs is not None:
        if len(bucket_cutoffs) != 2 or not 0 < bucket_cutoffs[0] < bucket_cutoffs[1]:
            raise ValueError(f"bucket_cutoffs must be two increasing perplexities, got {bucket_cutoffs}")
        fixed = (float(bucket_cutoffs[0]), float(bucket_cutoffs[1]))
    registered = current(models_dir(layout.home, REFERENCE_LM))
    if not model_path:
        if registered is None:
            raise FileNotFoundError(
                f"no reference language model under {models_dir(layout.home, REFERENCE_LM)}: "
                "materialize the reference_lm asset first, or set the kenlm resource's model_path to an "
                ".arpa/.binary file"
            )
        norm = registered.info.get("normalization")
        if registered.info.get("external_path") is None and norm != NORMALIZATION_VERSION:
            raise ValueError(
                f"{registered.path} was trained on text normalized as {norm!r}, but this version of Refinery "
                f"normalizes as {NORMALIZATION_VERSION!r}: re-materialize reference_lm"
            )
        lm = load_language_model(registered.path, order)
        return ScoringLM(lm, registered.info["percentiles"], fixed, REFERENCE_LM)
    lm = load_language_model(model_path, order)
    percentiles = None
    if registered is not None and registered.sha256 == lm.sha256:
        percentiles = registered.info["percentiles"]
    return ScoringLM(lm, percentiles, fixed, "external")


@dataclass(frozen=True)
class KenLMLoader:
    """Which n-gram model scores perplexity (``model_path`` '' for reference_lm's), its order and
    optional bucket cutoffs: a plain value that pickles, so a worker loads the same model."""

    model_path: str = ""
    order: int = 5
    bucket_cutoffs: tuple[float, ...] | None = None

    def load(self, layout: Layout) -> ScoringLM:
        """Loaded once per process per model file; checked for format and order."""
        cutoffs = list(self.bucket_cutoffs) if self.bucket_cutoffs is not None else None
        return scoring_lm(layout, self.model_path, self.order, cutoffs)
