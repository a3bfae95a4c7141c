"""Exact and fuzzy dedup on a distributed engine: keys on the workers, claims in the step, the rows
written by the workers.

The claims are first come, first served, in reading order, against one index shared with every
other partition: one process makes them, in order. Nothing else needs the whole partition, so on
an engine with workers the stage runs in three steps and writes what the in-process stage writes,
row for row and reason for reason:

1. **keys** (the workers, :meth:`~refinery.kernel.spec.Engine.map_to_parts`): each slice's ``id``
   and key (the content hash, or the MinHash signature: the expensive half, reading and hashing
   every document) written as ``part-<slice>``;
2. **claims** (the step): the key parts in slice order, ``batch_rows`` at a time, through the
   stage's own processor (:class:`~refinery.dedup.exact.ExactDeduper`,
   :class:`~refinery.dedup.fuzzy.FuzzyDeduper`) handed the keys ahead, so the decisions are the
   in-process ones; each row's outcome (reason, detail, ``duplicate_of``, similarity, score) is
   written as an outcome part of the same index. The step holds one part's ids and keys, never a
   document's text;
3. **write** (the workers, the stage's slices): each slice's rows with the outcome part of its
   index (:class:`DecidedClaims`), checked id by id.

The outcome folder's digest goes into the stage's provenance, so a retried step reuses the slices
an earlier attempt wrote only when the claims came out the same.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.batch import BatchResult, split_batch
from refinery.dedup.exact import content_hash
from refinery.dedup.signature_parts import signature_table_function, signatures_of
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import current_slice
from refinery.kernel.processor import StageProcessor
from refinery.storage import PART_NAME, PartsWriter, part_order

HASH_COLUMN = "hash"
ROW = "__row"  # a row's position in its part, carried through the processor to put outcomes back in order
STAMP = "claims_plan"  # provenance key: {"folder": the outcome parts, relative to the storage root, "digest"}


def hash_table_function(normalization: str) -> Callable[[pd.DataFrame], pa.Table]:
    """What a worker runs per batch for exact dedup: each row's id and content hash."""

    def table(frame: pd.DataFrame) -> pa.Table:
        hashes = [content_hash(t, normalization) for t in frame["text"].tolist()]
        ids = [str(i) for i in frame["id"].tolist()]
        return pa.table({"id": pa.array(ids, pa.string()), HASH_COLUMN: pa.array(hashes, pa.binary(16))})

    return table


def signature_id_table_function(index_params: dict) -> Callable[[pd.DataFrame], pa.Table]:
    """What a worker runs per batch for fuzzy dedup: each row's id and MinHash signature."""
    sign = signature_table_function(index_params)

    def table(frame: pd.DataFrame) -> pa.Table:
        ids = pa.array([str(i) for i in frame["id"].tolist()], pa.string())
        return sign(frame).add_column(0, "id", ids)

    return table


def outcome_schema(score: pa.Field) -> pa.Schema:
    return pa.schema(
        [
            ("id", pa.string()),
            ("reason", pa.string()),
            ("reason_detail", pa.string()),
            ("duplicate_of", pa.string()),
            ("similarity", pa.float64()),
            score,
        ]
    )


@dataclass
class ClaimFigures:
    """What the claims step did, for the stage's metadata."""

    parts: int = 0
    rows: int = 0
    rows_held_at_once: int = 0
    digest: str = ""
    removed: int = 0
    reused_key_parts: int = 0
    worker_seconds: float = 0.0
    sizes: list[int] = field(default_factory=list)

    def metadata(self) -> dict:
        return {
            "parts": self.parts,
            "rows_claimed": self.rows,
            "rows_held_at_once": self.rows_held_at_once,
            "removed": self.removed,
            "key_parts_reused_from_an_earlier_attempt": self.reused_key_parts,
            "key_worker_seconds": round(self.worker_seconds, 3),
        }


def _keys(
    folder: RootFolder, name: str, kind: str, num_perm: int
) -> tuple[list[str], list[bytes] | np.ndarray]:
    table = folder.read_table(name)
    ids = table.column("id").to_pylist()
    if kind == "exact":
        return ids, table.column(HASH_COLUMN).to_pylist()
    return ids, signatures_of(table, num_perm)


def claim_parts(
    key_folder: Path | str,
    parts: list[dict],
    kind: str,
    decide: Callable[[pd.DataFrame, list[bytes] | np.ndarray], BatchResult],
    score: pa.Field,
    out_folder: Path | str,
    batch_rows: int,
    num_perm: int = 0,
) -> ClaimFigures:
    """Step 2: every key part in order, ``batch_rows`` rows at a time, through ``decide(frame,
    keys)`` (the stage's processor with the keys handed ahead; ``frame`` holds ``id`` and the row's
    position); one outcome part per key part, in ``out_folder``. Both folders are local paths or
    URIs on the storage root's object store (the workers write the keys and read the outcomes)."""
    figures = ClaimFigures(parts=len(parts))
    figures.reused_key_parts = sum(bool(p.get("reused")) for p in parts)
    figures.worker_seconds = sum(float(p.get("seconds", 0.0)) for p in parts)
    digest = hashlib.sha256()
    schema = outcome_schema(score)
    keys_at, out = RootFolder.of(key_folder), RootFolder.of(out_folder).make()
    for part in sorted(parts, key=lambda p: p["index"]):
        name = PartsWriter.part_name(part["index"])
        ids, keys = _keys(keys_at, name, kind, num_perm)
        figures.rows_held_at_once = max(figures.rows_held_at_once, len(ids))
        pieces = []
        for lo in range(0, len(ids), batch_rows):
            hi = min(len(ids), lo + batch_rows)
            frame = pd.DataFrame({"id": ids[lo:hi], ROW: np.arange(lo, hi)})
            result = decide(frame, keys[lo:hi])
            pieces += [result.kept, result.rejected]
        outcome = _in_order(pieces, score.name, len(ids))
        figures.rows += len(ids)
        figures.removed += int(outcome["reason"].notna().sum())
        table = pa.Table.from_pandas(outcome, schema=schema, preserve_index=False)
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        data = sink.getvalue().to_pybytes()
        out.write_bytes(name, data)  # atomically: renamed into place, or one upload
        digest.update(name.encode())
        digest.update(data)
    figures.digest = digest.hexdigest()[:16]
    return figures


def _in_order(pieces: list[pd.DataFrame], score: str, rows: int) -> pd.DataFrame:
    """The kept and rejected rows of a part's batches as one outcome row each, in the part's order."""
    columns = ["id", "reason", "reason_detail", "duplicate_of", "similarity", score]
    frames = [p for p in pieces if len(p)]
    if not frames:
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})
    both = pd.concat(frames, ignore_index=True)
    for col in ("reason", "reason_detail", "duplicate_of", "similarity"):
        if col not in both:
            both[col] = None
    both = both.sort_values(ROW, kind="stable").reset_index(drop=True)
    if not np.array_equal(both[ROW].to_numpy(), np.arange(rows)):
        raise RuntimeError(f"the claims gave {len(both)} outcomes for a part of {rows} rows")
    for col in ("reason", "reason_detail", "duplicate_of"):
        both[col] = pd.Series([v if isinstance(v, str) else None for v in both[col]], dtype=object)
    both["similarity"] = pd.to_numeric(both["similarity"], errors="coerce")
    return both[columns]


class DecidedClaims(StageProcessor):
    """A worker's copy of a dedup stage: it writes the slices it is given, each with the outcome
    part of its index (what the step's claims decided), so no index is opened on a worker. Outside
    a slice (one process writing the partition) it reads the parts in order as the rows come."""

    def __init__(self, folder: Path | str, score: str):
        self.folder, self.score = RootFolder.of(folder), score
        self._slice: int | None = None
        self._outcome: pd.DataFrame | None = None
        self._offset = 0
        self._queue: list[str] | None = None

    def _read(self, name: str) -> None:
        # without the stored pandas metadata, string nulls come back as None
        self._outcome, self._offset = self.folder.read_table(name).to_pandas(ignore_metadata=True), 0

    def _take(self, n: int) -> pd.DataFrame:
        piece = current_slice()
        if piece is not None:  # a worker's slice: its own part
            if piece.index != self._slice or self._outcome is None:
                self._read(PartsWriter.part_name(piece.index))
                self._slice = piece.index
            rows = self._outcome.iloc[self._offset : self._offset + n]
            self._offset += len(rows)
            return rows
        if self._queue is None:  # one process: every part, in order
            names = [n for n in self.folder.names() if PART_NAME.match(n)]
            self._queue = sorted(names, key=part_order)
        taken = []
        while n > 0:
            if self._outcome is None or self._offset >= len(self._outcome):
                if not self._queue:
                    break
                self._read(self._queue.pop(0))
                continue
            rows = self._outcome.iloc[self._offset : self._offset + n]
            self._offset += len(rows)
            n -= len(rows)
            taken.append(rows)
        return pd.concat(taken) if len(taken) != 1 else taken[0]

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        rows = self._take(len(frame)) if len(frame) else self._empty()
        ids = [str(i) for i in frame["id"].tolist()]
        if rows["id"].tolist() != ids:
            raise RuntimeError(
                f"the claims' outcomes in {self.folder} do not match the rows being written: the "
                "upstream partition changed during the run; materialize it again"
            )
        out = frame.assign(**{self.score: rows[self.score].to_numpy()})
        reasons = [
            (reason, detail) if isinstance(reason, str) else None
            for reason, detail in zip(rows["reason"].tolist(), rows["reason_detail"].tolist(), strict=True)
        ]
        extra = {"duplicate_of": rows["duplicate_of"].tolist(), "similarity": rows["similarity"].tolist()}
        return split_batch(out, reasons, extra)

    def _empty(self) -> pd.DataFrame:
        columns = ("id", "reason", "reason_detail", "duplicate_of", "similarity", self.score)
        return pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})


__all__ = [
    "STAMP",
    "ClaimFigures",
    "DecidedClaims",
    "claim_parts",
    "hash_table_function",
    "outcome_schema",
    "signature_id_table_function",
]
