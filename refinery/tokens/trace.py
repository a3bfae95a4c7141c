"""`refinery trace`: from a training step to its documents, and from a document to its steps.

- :func:`trace_step`: the documents of global step N (under the materialized batch geometry, or
  another one given), each with its rank, micro-batch, sequence and token span, the raw inbox
  file and line it came from, and every score column ``pretrain_corpus`` holds for it.
- :func:`trace_document`: where a document went. If it was trained on: every sequence and step
  it appears in (all its pieces). If not: the stage that removed it and why (every text stage's
  rejected rows, the inbox quarantine, ``tokenized_corpus``), or that it reached the corpus but
  is not in the schedule (not drawn by the mixture).

Both read only the files: the lineage table (row groups chosen by statistics), the corpus
partitions of the sources involved and the rejected tables, through the storage root's filesystem
(a local folder or an object store).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from refinery import names
from refinery.stages.text import TEXT_FILTER_STAGES
from refinery.storage import Storage
from refinery.table_store import AnyStorage, dataset, is_object, read_table, rejected_partitions, table_exists
from refinery.tokens import lineage

# Corpus columns that say where a document came from (the rest of its non-text columns are scores).
ORIGIN_COLUMNS = ("file", "line", "url", "meta")
NOT_SCORES = {"id", "text", "source", *ORIGIN_COLUMNS, "language"}


class TraceError(ValueError):
    pass


def geometry(storage: Storage, micro_batch_size=None, ranks=None, grad_accumulation=None) -> dict:
    """The batch geometry: the materialized one, with any value overridden."""
    index = storage.table_provenance(names.TRAINING_TOKENS).get("index")
    if index is None:
        raise TraceError("no lineage table: materialize training_tokens first")
    return {
        "micro_batch_size": micro_batch_size or index["micro_batch_size"],
        "ranks": ranks or index["data_parallel_size"],
        "grad_accumulation": grad_accumulation or index["grad_accumulation"],
    }


def _lineage_path(storage: AnyStorage):
    if not table_exists(storage, names.TRAINING_TOKENS):
        raise TraceError("no lineage table: materialize training_tokens first")
    return storage.table_path(names.TRAINING_TOKENS)


def _lineage_fs(storage: AnyStorage):
    return storage.fs if is_object(storage) else None


def corpus_rows(storage: Storage, keys: pd.DataFrame) -> pd.DataFrame:
    """The pretrain_corpus rows (without text) of the (source, id) pairs in ``keys``."""
    frames = []
    for source, part in keys.groupby("source"):
        files = storage.files(names.PRETRAIN_CORPUS, source)
        if not files:
            continue
        found = dataset(storage, files)
        columns = [c for c in found.schema.names if c != "text"]
        table = found.to_table(columns=columns, filter=pc.field("id").isin(part["id"].unique().tolist()))
        frames.append(table.to_pandas())
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["source", "id"])


def scores_of(row: pd.Series) -> dict:
    return {
        k: (round(float(v), 4) if isinstance(v, float | np.floating) else v)
        for k, v in row.items()
        if k not in NOT_SCORES and v is not None and not (isinstance(v, float) and np.isnan(v))
    }


def trace_step(
    storage: AnyStorage,
    step: int,
    split: str = "train",
    micro_batch_size: int | None = None,
    ranks: int | None = None,
    grad_accumulation: int | None = None,
    inbox: Path | None = None,
) -> pd.DataFrame:
    """One row per (sequence, document) piece of global step ``step``, in training order.
    ``inbox`` is the text inbox the raw files are named in (default: beside a local root)."""
    geo = geometry(storage, micro_batch_size, ranks, grad_accumulation)
    g = geo["micro_batch_size"] * geo["ranks"] * geo["grad_accumulation"]
    path = _lineage_path(storage)
    pieces = lineage.read_step(path, split, step * g, (step + 1) * g - 1, _lineage_fs(storage)).to_pandas()
    if not len(pieces):
        raise TraceError(f"step {step} of split {split!r} has no sequences (G = {g} sequences per step)")
    pieces = pieces.sort_values(["sequence", "offset"]).reset_index(drop=True)
    where = lineage.step_of(pieces["sequence"].to_numpy(), **geo)
    pieces = pieces.assign(step=where["step"], rank=where["rank"], micro_batch=where["micro_batch"])
    corpus = corpus_rows(storage, pieces[["source", "id"]].drop_duplicates())
    layout_root = inbox or (
        Path("inbox") / "text" if is_object(storage) else storage.root.parent / "inbox" / "text"
    )
    origin = corpus.set_index(["source", "id"]) if len(corpus) else None
    files, lines, scores = [], [], []
    for source, doc in zip(pieces["source"], pieces["id"], strict=True):
        row = origin.loc[(source, doc)] if origin is not None and (source, doc) in origin.index else None
        if isinstance(row, pd.DataFrame):
            row = row.iloc[0]
        files.append(str(layout_root / source / row["file"]) if row is not None and row.get("file") else None)
        lines.append(row.get("line") if row is not None else None)
        scores.append(scores_of(row) if row is not None else {})
    return pieces.assign(raw_file=files, line=lines, scores=scores)[
        [
            "step",
            "rank",
            "micro_batch",
            "sequence",
            "offset",
            "length",
            "source",
            "id",
            "doc_start",
            "doc_tokens",
            "epoch",
            "raw_file",
            "line",
            "scores",
        ]
    ]


@dataclass
class DocumentTrace:
    """Where one document went: ``status`` is trained, removed, not_scheduled or unknown."""

    source: str | None
    id: str
    status: str
    appearances: pd.DataFrame = field(default_factory=pd.DataFrame)  # trained: its pieces
    removed: pd.DataFrame = field(default_factory=pd.DataFrame)  # removed: stage, reason, detail

    def lines(self) -> list[str]:
        who = f"{self.source}/{self.id}" if self.source else self.id
        if self.status == "trained":
            a = self.appearances
            head = (
                f"{who}: trained in {a['sequence'].nunique()} sequences, steps "
                f"{sorted(a['step'].unique().tolist())[:20]} ({len(a)} pieces)"
            )
            return [head]
        if self.status == "removed":
            return [
                f"{who}: removed by {r.stage}: {r.reason}"
                + (f" ({r.reason_detail})" if isinstance(r.reason_detail, str) and r.reason_detail else "")
                + (f", a copy of {r.duplicate_of}" if isinstance(r.duplicate_of, str) else "")
                for r in self.removed.itertuples()
            ]
        if self.status == "not_scheduled":
            return [
                f"{who}: in pretrain_corpus but not in the training schedule (not drawn by pretrain_mixture)"
            ]
        return [f"{who}: not found in any stage's output or rejected rows"]


def _split_ref(ref: str, source: str | None) -> tuple[str | None, str]:
    if source is None and "/" in ref:
        head, tail = ref.split("/", 1)
        return head, tail
    return source, ref


def trace_document(
    storage: Storage,
    ref: str,
    source: str | None = None,
    micro_batch_size: int | None = None,
    ranks: int | None = None,
    grad_accumulation: int | None = None,
) -> DocumentTrace:
    """Where the document ``ref`` (``source/id``, or an id with ``source``) went."""
    source, doc = _split_ref(ref, source)
    if table_exists(storage, names.TRAINING_TOKENS):
        cond = pc.field("id") == doc
        if source is not None:
            cond = cond & (pc.field("source") == source)
        path = storage.table_path(names.TRAINING_TOKENS)
        found = dataset(storage, [path]).to_table(filter=cond).to_pandas()
        if len(found):
            geo = geometry(storage, micro_batch_size, ranks, grad_accumulation)
            where = lineage.step_of(found["sequence"].to_numpy(), **geo)
            found = found.assign(step=where["step"], rank=where["rank"], micro_batch=where["micro_batch"])
            found = found.sort_values(["split", "sequence", "offset"]).reset_index(drop=True)
            return DocumentTrace(source or found["source"].iloc[0], doc, "trained", appearances=found)
    removed = _rejections(storage, source, doc)
    if len(removed):
        return DocumentTrace(source or removed["source"].iloc[0], doc, "removed", removed=removed)
    in_corpus = [
        s
        for s in ([source] if source else storage.partitions(names.PRETRAIN_CORPUS))
        if storage.exists(names.PRETRAIN_CORPUS, s)
        and len(corpus_rows(storage, pd.DataFrame({"source": [s], "id": [doc]})))
    ]
    if in_corpus:
        return DocumentTrace(in_corpus[0], doc, "not_scheduled")
    return DocumentTrace(source, doc, "unknown")


REJECTING_STAGES = (*TEXT_FILTER_STAGES, names.MULTILINGUAL_FILTERED, names.TOKENIZED_CORPUS)


def _rejections(storage: Storage, source: str | None, doc: str) -> pd.DataFrame:
    """Every stage's rejected rows for the document, in pipeline order."""
    rows = []
    for stage in REJECTING_STAGES:
        for part in [source] if source else _rejected_partitions(storage, stage):
            files = storage.files(stage, part, rejected=True)
            if not files:
                continue
            found = dataset(storage, files)
            wanted = [
                c
                for c in ("source", "id", "reason", "reason_detail", "duplicate_of")
                if c in found.schema.names
            ]
            table = found.to_table(columns=wanted, filter=pc.field("id") == doc)
            for r in table.to_pylist():
                rows.append({"stage": stage, "source": r.get("source", part), **r})
    return pd.DataFrame(rows, columns=["stage", "source", "id", "reason", "reason_detail", "duplicate_of"])


def _rejected_partitions(storage: AnyStorage, stage: str) -> list[str]:
    return rejected_partitions(storage, stage)


def lineage_schema() -> list[str]:
    return list(lineage.SCHEMA.names)


def read_pieces(storage: Storage) -> pd.DataFrame:
    _lineage_path(storage)
    return read_table(storage, names.TRAINING_TOKENS).to_pandas()
