"""Ingest on a cluster's workers: one task per inbox file, or per byte range of a large JSONL file.

The driver lists the source folder and cuts it into :class:`FilePiece` s (files in the folder's
order; a plain JSONL file over ``split_bytes`` in ranges cut at newlines); every piece is read by a
task that writes its own pair of parts (documents and quarantine, ``part-<piece>``), so the parts
read in order give the rows of one sequential reading. The driver keeps the list of pieces and each
task's counts, never a row. What one sequential reading decides from what it read before is
computed by tasks too, so the output equals the local engine's row for row:

1. **line numbers**: a range's first line number is the number of lines before it. A counting task
   per range (``bytes.count``, about 1 GB/s) gives them before the ranges are parsed.
2. **document ids**: an id seen earlier in the source is a ``duplicate_id`` (input ids) or takes the
   suffix ``-2``, ``-3``… (ids derived from the text). Each parse task writes the keys it handed out,
   hash-partitioned by their root (``doc-<hash>`` without its suffix, or the input id), so every key
   that can collide with another lands in the same bucket. A task per bucket replays, in reading
   order, the roots seen more than once (:class:`refinery.ids.IdAssigner`, as the local reader
   does) and writes what differs; a task per part that has differences then rewrites the part's id
   column, or, where an input id turns out to be a duplicate (its row moves to the quarantine with
   the reader's own reason and columns), reads the piece again with those decisions.

The parts and a manifest (parts, rows, provenance: written last) are committed together,
quarantine first, so the output is complete or absent: on a local root the staging folders of a
:class:`refinery.storage.PartsWriter` are moved into place; on an object store (``s3://…``) the
manifest, written last, is the commit point (:mod:`refinery.kernel.parts_target`).

A failed attempt leaves its plan, parts, id keys and per-piece done markers under a token named by
the source's fingerprint; a retry over the same input reads only the pieces without a valid marker
and fixes only the parts not yet fixed (:mod:`refinery.kernel.ingest_resume`).

Known cost: the id keys are written per piece and bucket (one small file each where non-empty), so
a source of very many files makes many small files in the scratch folder.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from refinery.fs import join
from refinery.ids import IdAssigner, content_id, valid_id
from refinery.kernel.collector import FilePiece, IngestStats, RowCollector, source_files
from refinery.kernel.ingest import batch_head
from refinery.kernel.ingest_resume import (
    PLAN,
    TOKEN_PREFIX,
    ingest_fingerprint,
    marker_names,
    piece_marker,
    read_marker,
    write_marker,
)
from refinery.kernel.parts_target import LocalTarget, ObjectTarget, committed_parts, parts_target
from refinery.kernel.runner import StageRun
from refinery.kernel.spec import TaskRunner
from refinery.stats import StageStats
from refinery.storage import Storage, stamped, table_from_frame

ROOT_PATTERN = r"^(doc-[0-9a-f]{20})(?:-\d+)?$"  # a derived id and the suffixed ids it may become
SAMPLE = 5
SAMPLE_VALUE = 1024  # a sample's text or raw bytes travel cut to this (the metadata shows 160 characters)
BUCKET_BYTES = 1 << 30
PIECES_PER_WORKER = 4  # a folder of few large JSONL files is cut finer, so no one late task decides the span
MIN_RANGE_BYTES = 4 << 20  # ... but not into ranges smaller than this (a task's fixed cost is milliseconds)


@dataclass(frozen=True)
class IngestJob:
    """What every task of one ingest shares (sent to the workers once)."""

    reader: type[RowCollector]
    folder: str
    source: str
    params: BaseModel
    root: str  # the storage root: a local folder or a URI (refinery.fs)
    asset: str
    token: str  # names this run's parts and scratch files (parts_target)
    schema: pa.Schema  # stamped with the provenance
    rejected_schema: pa.Schema
    buckets: int  # id-key buckets; 0: a single piece, whose reader assigns ids itself

    def target(self) -> LocalTarget | ObjectTarget:
        return parts_target(self.root, self.asset, self.source, self.token)


@dataclass
class TaskIds(IdAssigner):
    """The reader's id assigner inside a task: checks an input id without the source's state and
    hands out a derived id's base, recording both (``keys``). With ``decided`` (a rereading after
    the buckets were resolved) it returns, for the n-th key, what a sequential reading gives."""

    decided: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)
    keys: list[tuple[str, str]] = field(default_factory=list)  # (kind "e"/"d", value)

    def _record(self, kind: str, value: str) -> tuple[str | None, str | None]:
        seq = len(self.keys)
        self.keys.append((kind, value))
        return self.decided.get(seq, (value, None))

    def explicit(self, raw_id: object) -> tuple[str | None, str | None]:
        value, error = valid_id(raw_id)
        return (None, error) if error else self._record("e", value)

    def derived(self, text: str) -> str:
        return self._record("d", content_id(text))[0]

    def claim(self, base: str) -> str:
        return self._record("d", base)[0]


# -- the driver ------------------------------------------------------------------------------------
def plan_pieces(
    reader: RowCollector, split_bytes: int, workers: int = 1, per_worker: int | None = None
) -> list[FilePiece]:
    """The folder's files in reading order, a plain JSONL file over the range size cut in ranges of
    that size (their first line numbers are filled in by :func:`count_lines` tasks). The range size
    is ``split_bytes``, or less when the folder would give fewer than ``per_worker`` pieces per
    worker (:func:`range_bytes`)."""
    folder = reader.folder
    files = [
        (path, path.relative_to(folder).as_posix(), path.stat().st_size) for path in source_files(folder)
    ]
    per_worker = PIECES_PER_WORKER if per_worker is None else per_worker
    split = range_bytes([size for _, _, size in files], split_bytes, workers, per_worker)
    pieces: list[FilePiece] = []
    for path, rel, size in files:
        if split > 0 and size > split and _splittable(reader, path):
            count = -(-size // split)  # equal ranges (none above the range size): no sliver at the end
            for i in range(count):
                start, end = i * size // count, (i + 1) * size // count
                pieces.append(FilePiece(len(pieces), rel, size, start, end))
        else:
            pieces.append(FilePiece(len(pieces), rel, size))
    return pieces


def range_bytes(sizes: list[int], split_bytes: int, workers: int, per_worker: int = PIECES_PER_WORKER) -> int:
    """The byte range size: ``split_bytes``, cut down to ``total / (per_worker × workers)`` (not below
    :data:`MIN_RANGE_BYTES`) when the files alone give fewer pieces than that.

    Why: with one or two large files per worker, the span of the step is decided by the task that
    starts last; smaller ranges leave a shorter tail (the pieces also go out largest first, each
    to the first free worker: :func:`pulled`). But every piece costs a task, two parts and its
    id-key files, and ranges need a line-counting step first: on 2 workers, 20 ranges of 256 MB
    took 3.56 s against 2.71 s for its 8 files, same run (benchmarks/RESULTS.md, "Ingest, embeddings
    and the corpus dedup on 1 vs 2 Ray workers, seventh session"). So four pieces per worker. 0
    (never split) stays 0."""
    if split_bytes <= 0 or len(sizes) >= per_worker * workers:
        return split_bytes
    target = -(-sum(sizes) // max(1, per_worker * workers))
    return min(split_bytes, max(MIN_RANGE_BYTES, target))


def number_lines(pieces: list[FilePiece], folder: Path, runner: TaskRunner) -> list[FilePiece]:
    """The ranges with their first line numbers: lines per range counted by tasks, summed here."""
    ranged = [p for p in pieces if p.end is not None]
    if not ranged:
        return pieces
    counts = runner.map(count_lines, [(str(folder), p) for p in ranged])
    lines = {c["index"]: c["lines"] for c in counts}
    numbered, before = [], {}
    for piece in pieces:
        if piece.end is None:
            numbered.append(piece)
            continue
        first = before.get(piece.path, 0) + 1
        before[piece.path] = first - 1 + lines[piece.index]
        numbered.append(replace(piece, first_line=first))
    return numbered


def ingest_in_tasks(
    reader: RowCollector,
    storage: Storage | Any,  # or refinery.object_storage.ObjectStorage (its root a URI)
    asset: str,
    provenance: dict,
    runner: TaskRunner,
    workers: int,
    split_bytes: int,
    params: BaseModel,
) -> StageRun:
    """Ingest ``reader``'s folder as tasks on ``runner``; ``reader`` (not read) receives the merged
    counts, so its ``report()`` and ``summary()`` show the whole source. A retry after a failed
    attempt over the same input reads only the pieces without a done marker
    (:mod:`refinery.kernel.ingest_resume`)."""
    started = time.perf_counter()
    root = str(storage.root)
    key = ingest_fingerprint(
        type(reader), reader.folder, params, provenance, committed_parts(root, asset, reader.source)
    )
    target = parts_target(root, asset, reader.source, f"{TOKEN_PREFIX}{key}")
    target.sweep_other_attempts(TOKEN_PREFIX)  # a changed input starts clean
    plan = read_marker(target, PLAN)
    plan_resumed = plan is not None
    if plan is None:
        pieces = number_lines(plan_pieces(reader, split_bytes, workers), reader.folder, runner)
        plan = {"pieces": pieces, "buckets": id_buckets(pieces, workers)}
        write_marker(target, PLAN, [], plan)
    pieces = plan["pieces"]
    job = IngestJob(
        reader=type(reader),
        folder=str(reader.folder),
        source=reader.source,
        params=params,
        root=root,
        asset=asset,
        token=target.token,
        schema=stamped(reader.SCHEMA.remove_metadata(), provenance),
        rejected_schema=stamped(reader.QUARANTINE_SCHEMA.remove_metadata(), provenance),
        buckets=plan["buckets"],
    )
    # On failure nothing is removed: the retry finds the plan, the parts and their markers.
    if not pieces:  # an empty or missing folder: one empty part each, as the local engine's empty files
        with target.open_part(0, job.schema), target.open_part(0, job.rejected_schema, rejected=True):
            pass
    # One listing, then only the markers there are read (a first attempt reads none: on an object
    # store, a request per piece would cost a round trip each).
    present = set(marker_names(target))
    done = {
        p.index: info
        for p in pieces
        if piece_marker(p.index) in present
        and (info := read_marker(target, piece_marker(p.index))) is not None
    }
    todo = [p for p in pieces if p.index not in done]
    # Largest first, each to the first worker free: the workers end together.
    largest = sorted(todo, key=lambda p: (-_piece_bytes(p), p.index))
    reads = pulled(runner, workers).map(read_piece, [(job, p) for p in largest])
    results = {index: info["result"] for index, info in done.items()} | {r["index"]: r for r in reads}
    fixed_before = {index for index, info in done.items() if info["fixed"]}
    fixes_resumed = 0
    if job.buckets:
        fixes, fixes_resumed = resolve_ids(job, pieces, runner, results, fixed_before)
        results.update(fixes)
    ordered = [results[p.index] for p in pieces]
    path, rejected_path = target.commit(max(1, len(pieces)), provenance)
    target.clear_work()
    stats = merge_counts(reader, ordered)
    run = StageRun(
        asset, reader.source, path, rejected_path, time.perf_counter() - started, stats, reader.SCHEMA
    )
    run.extra["engine"] = {
        "runner": runner.name,
        "tasks": len(pieces),
        "ranges": sum(p.end is not None for p in pieces),
        "ids_fixed": sum(r.get("ids_fixed", 0) for r in ordered),
        "pieces_reread": sum(bool(r.get("reread")) for r in ordered),
        "nodes": len({r["node"] for r in ordered}),
        # A retry: the pieces read by this attempt, those an earlier attempt completed (skipped),
        # the id fixes it had applied, and whether the plan (ranges, line numbers) was reused.
        "pieces_read": len(todo),
        "pieces_resumed": len(done),
        "fixes_resumed": fixes_resumed,
        "plan_resumed": plan_resumed,
    }
    return run


def id_buckets(pieces: list[FilePiece], workers: int) -> int:
    """How many id-key buckets: none for a single piece (its reader decides every id); else two per
    worker (at most one per piece), and one per GiB of input at least, so a bucket task holds the keys
    of about a GiB of input (some 60 MB of keys for documents of 4 KB) however large the source."""
    if len(pieces) <= 1:
        return 0
    size = sum(p.size for p in pieces if p.start == 0)
    return max(1, min(len(pieces), 2 * workers), -(-size // BUCKET_BYTES))


def resolve_ids(
    job: IngestJob,
    pieces: list[FilePiece],
    runner: TaskRunner,
    results: dict[int, dict],
    fixed_before: set[int] = frozenset(),  # type: ignore[assignment]
) -> tuple[dict[int, dict], int]:
    """Bucket tasks find the keys a sequential reading decides otherwise; part tasks apply them.
    Returns the changed pieces' results, and how many pieces needed a fix that an earlier attempt
    had applied (``fixed_before``: their markers say so; they are not fixed again).

    The buckets always run (they read only the keys, which a resumed piece keeps): their fix files
    are written afresh, the folder cleared first, so no earlier attempt's file is applied."""
    target = job.target()
    target.clear_folder(join(target.work, "fixes"))
    touched: set[int] = set()
    for result in runner.map(resolve_bucket, [(job, b) for b in range(job.buckets)]):
        touched.update(result["pieces"])
    by_index = {p.index: p for p in pieces}
    todo = sorted(touched - fixed_before)
    fixes = runner.map(fix_piece, [(job, by_index[i], results[i]) for i in todo])
    return {f["index"]: f for f in fixes}, len(touched & fixed_before)


def merge_counts(reader: RowCollector, results: Sequence[dict]) -> StageStats:
    """The tasks' statistics in piece order (samples: the first rows of the source) folded into one
    StageStats, and their reader counts into ``reader``."""
    stats = StageStats(text_column=reader.TEXT_COLUMN)
    total: IngestStats = reader.stats
    for result in results:
        stats.merge(result["stats"], SAMPLE)
        part: IngestStats = result["ingest"]
        total.files.update(part.files)  # files that gave no row too (their count 0)
        total.reasons.update(part.reasons)
        total.skipped.update(part.skipped)
        for name in ("blank_lines", "documents", "quarantined", "input_bytes"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        for name, counts in result["counters"].items():
            getattr(reader, name).update(counts)
    stats.rows_in = stats.rows_out + stats.rows_rejected
    stats.chars_in = stats.chars_out
    stats.reasons = Counter(total.reasons)
    stats.extra = {
        "folder_exists": reader.folder.is_dir(),
        "files": dict(total.files),
        "blank_lines": total.blank_lines,
        "input_bytes": total.input_bytes,
    }
    return stats


# -- the tasks -------------------------------------------------------------------------------------
def count_lines(folder: str, piece: FilePiece) -> dict:
    """How many lines start in the piece's byte range (where a range reader reads them)."""
    assert piece.end is not None
    lines = int(piece.start == 0 and piece.size > 0)
    low, high = max(piece.start - 1, 0), min(piece.end - 1, piece.size - 1)
    with open(Path(folder) / piece.path, "rb") as stream:
        stream.seek(low)
        remaining = max(0, high - low)
        while remaining:
            chunk = stream.read(min(remaining, 8 << 20))
            if not chunk:
                break
            lines += chunk.count(b"\n")
            remaining -= len(chunk)
    return {"index": piece.index, "lines": lines}


def read_piece(job: IngestJob, piece: FilePiece, decided: dict | None = None) -> dict:
    """Read one piece into its two parts; return its counts (and write its id keys by bucket, then
    its done marker). With ``decided`` (:func:`fix_piece`'s rereading) no keys and no marker: the
    fix writes the marker."""
    reader = job.reader(Path(job.folder), job.source, job.params)
    ids = TaskIds(decided or {}) if job.buckets else None
    if ids is not None:
        reader.use_ids(ids)  # the source-wide decisions come from the buckets (resolve_bucket)
    target = job.target()
    stats = StageStats(text_column=reader.TEXT_COLUMN)
    schema, rejected_schema = job.schema, job.rejected_schema
    with (
        target.open_part(piece.index, schema) as out,
        target.open_part(piece.index, rejected_schema, rejected=True) as bad,
    ):
        reader.arrow_blocks = True
        for batch in reader.read_piece(piece):
            if batch.table is not None:  # documents admitted as one Arrow block, before the rows below
                out.write(pa.Table.from_arrays(batch.table.columns, schema=schema))
                stats.rows_out += batch.table.num_rows
                stats.observe_output_table(batch.table)
            rows = pd.DataFrame(batch.documents, columns=schema.names)
            quarantine = pd.DataFrame(batch.quarantine, columns=rejected_schema.names)
            if len(rows):
                out.write(table_from_frame(rows, schema))
            if len(quarantine):
                bad.write(table_from_frame(quarantine, rejected_schema))
            stats.rows_out += len(rows)
            stats.rows_rejected += len(quarantine)
            stats.observe_output(rows)
            kept = rows
            if batch.table is not None and len(stats.sample_kept) < SAMPLE:
                kept = batch_head(batch, schema.names, reader.TEXT_COLUMN, SAMPLE - len(stats.sample_kept))
            for sample, frame in ((stats.sample_kept, kept), (stats.sample_rejected, quarantine)):
                if len(sample) < SAMPLE and len(frame):
                    sample.extend(frame.head(SAMPLE - len(sample)).to_dict("records"))
    keys = _write_keys(job, target, piece.index, ids.keys) if ids is not None and decided is None else []
    for row in (
        *stats.sample_kept,
        *stats.sample_rejected,
    ):  # every task's samples come back: keep them small
        for key, value in row.items():
            if isinstance(value, str | bytes) and len(value) > SAMPLE_VALUE:
                row[key] = value[:SAMPLE_VALUE]
    result = {
        "index": piece.index,
        "stats": stats,
        "ingest": reader.stats,
        "counters": {k: dict(v) for k, v in vars(reader).items() if isinstance(v, Counter)},
        "node": _node(),
        "keys": keys,  # its id-key files: a resumed piece's keys must be there too
    }
    if decided is None:  # after both parts and the keys: a retry skips this piece
        mark_piece(job, target, piece, result, fixed=False)
    return result


def mark_piece(job: IngestJob, target: Any, piece: FilePiece, result: dict, fixed: bool) -> None:
    """The piece's done marker: its parts and key files with their sizes, and its result."""
    files = [target.part_path(piece.index, rejected) for rejected in (False, True)] + result["keys"]
    write_marker(target, piece_marker(piece.index), files, {"result": result, "fixed": fixed})


def resolve_bucket(job: IngestJob, bucket: int) -> dict:
    """Replay, in reading order, the keys of this bucket whose root occurs more than once, and write
    for each piece the keys that a sequential reading decides otherwise."""
    target = job.target()
    tables = target.tables(join(target.work, "keys", f"b{bucket}"))
    if not tables:
        return {"pieces": []}
    keys = pd.concat([t.to_pandas() for t in tables], ignore_index=True)
    keys = keys[keys["root"].duplicated(keep=False)]
    if keys.empty:
        return {"pieces": []}
    keys = keys.sort_values(["piece", "seq"], kind="stable")
    changes: list[dict] = []
    for _, group in keys.groupby("root", sort=False):
        ids = IdAssigner()
        for piece, seq, kind, value in zip(
            group["piece"], group["seq"], group["kind"], group["value"], strict=True
        ):
            if kind == "e":
                final, error = ids.explicit(value)
            else:
                final, error = ids.claim(value), None
            if error or final != value:
                changes.append({"piece": int(piece), "seq": int(seq), "id": final, "error": error})
    if not changes:
        return {"pieces": []}
    frame = pd.DataFrame(changes)
    for piece, rows in frame.groupby("piece"):
        path = join(target.work, "fixes", f"p{piece}", f"b{bucket}.parquet")
        target.put_table(path, pa.Table.from_pandas(rows.drop(columns="piece"), preserve_index=False))
    return {"pieces": sorted(int(p) for p in frame["piece"].unique())}


def fix_piece(job: IngestJob, piece: FilePiece, result: dict) -> dict:
    """Apply a piece's decided ids: rewrite its id column, or (an input id that is a duplicate)
    read the piece again with every decision, so the row is quarantined as the reader does it.
    ``result`` is the piece's first reading's; returns the piece's result after the fix, also
    written into its done marker (with the rewritten parts' sizes), so a retry skips the fix.

    Applying a fix twice gives the same part (ids are set, never appended to), so a fix that dies
    before its marker may be redone."""
    target = job.target()
    fixes = pd.concat([t.to_pandas() for t in target.tables(join(target.work, "fixes", f"p{piece.index}"))])
    if fixes["error"].notna().any():
        decided = {
            int(s): (None if pd.isna(i) else i, None if pd.isna(e) else e)
            for s, i, e in zip(fixes["seq"], fixes["id"], fixes["error"], strict=True)
        }
        again = read_piece(job, piece, decided)
        after = {**again, "ids_fixed": len(fixes), "reread": True, "keys": result["keys"]}
    else:
        table = target.read_part(piece.index)
        ids = table.column("id").to_pylist()
        for seq, new in zip(fixes["seq"], fixes["id"], strict=True):  # key n is document row n here
            ids[int(seq)] = new
        column = table.schema.get_field_index("id")
        field_ = table.schema.field(column)
        table = table.set_column(column, field_, pa.array(ids, field_.type))
        target.put_table(target.part_path(piece.index), table.replace_schema_metadata(job.schema.metadata))
        after = {**result, "ids_fixed": len(fixes)}
        for row, new in zip(after["stats"].sample_kept, ids[:SAMPLE], strict=False):  # the sample's ids too
            row["id"] = new
    mark_piece(job, target, piece, after, fixed=True)
    return after


# -- helpers ---------------------------------------------------------------------------------------
def pulled(runner: TaskRunner, workers: int) -> TaskRunner:
    """``runner`` with no more tasks submitted at once than there are workers (where it has such a
    cap: Ray's), so each piece goes to the first worker free instead of being placed ahead.

    Why: submitted all at once, Ray's ``SPREAD`` placed 8 equal pieces on two loopback workers
    sometimes 4 and 4 (1.69 s), sometimes 5 and 3 (2.26 s): the same run's repeats
    (benchmarks/RESULTS.md, "Ingest, embeddings and the corpus dedup on 1 vs 2 Ray workers,
    seventh session"). A piece is a tenth
    of a second or more of work; the driver's round trip before the next one is milliseconds."""
    if is_dataclass(runner) and hasattr(runner, "in_flight"):
        return replace(runner, in_flight=max(1, workers), steps=runner.steps)  # the same step log
    return runner


def _piece_bytes(piece: FilePiece) -> int:
    return piece.size if piece.end is None else piece.end - piece.start


def _splittable(reader: RowCollector, path: Path) -> bool:
    try:
        return reader.splittable(path)
    except OSError:  # unreadable: its task quarantines it
        return False


def _write_keys(
    job: IngestJob, target: LocalTarget | ObjectTarget, index: int, keys: list[tuple[str, str]]
) -> list[str]:
    """The piece's keys (kind, value, their order), one file per bucket of their root's hash;
    returns the files' paths."""
    if not keys:
        return []
    frame = pd.DataFrame(keys, columns=["kind", "value"])
    frame["seq"] = range(len(frame))
    frame["piece"] = index
    frame["root"] = frame["value"].str.extract(ROOT_PATTERN, expand=False).fillna(frame["value"])
    bucket = pd.util.hash_array(frame["root"].to_numpy(object)) % job.buckets
    paths = []
    for b, rows in frame.groupby(bucket):
        path = join(target.work, "keys", f"b{b}", f"p{index}.parquet")
        target.put_table(path, pa.Table.from_pandas(rows, preserve_index=False))
        paths.append(path)
    return paths


def _node() -> str:
    """Where a task ran: the Ray node, or this host."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return os.uname().nodename
