"""Semantic dedup as Parquet shuffle steps on an engine's tasks: no process holds the partition.

The decisions of :func:`refinery.dedup.semantic.plan` (same removals, same reasons, same
``duplicate_of``), computed by tasks that read and write files on the storage root, a local folder
or an object store (:mod:`refinery.dedup.marked_shuffle`: files named after their task's attempt,
committed by a done marker per task, so a retried step runs only the tasks without one), run by the
engine's :class:`~refinery.engine.tasks.TaskRunner` (Ray tasks on the cluster, or this process).
``P`` pieces are runs of row groups of the partition's ``document_embeddings``; ``C`` other
partitions hold the earlier claims (their kept documents); ``R`` reducers take the clusters.

1. ``sample`` (P): a piece checks its rows against the upstream documents at the same positions
   (ids and text hashes: stale embeddings fail the step, naming the partition) and writes its
   rows of the k-means sample (:func:`~refinery.dedup.semantic.sample_positions`);
2. the driver reads that sample (at most ``kmeans_sample_rows`` vectors, the only vectors it ever
   reads) and fits spherical k-means on it, as ``plan`` does;
3. ``assign`` (P + C): every member and every claim goes to its nearest centroid; the rows
   ``(cluster, kind, position, key, vector)`` go to reducer ``cluster mod R``, each file sorted by
   cluster (a claim task streams its partition in blocks and spills sorted chunks);
4. ``decide`` (R): a reducer merges its sorted files one cluster at a time (one 256-row group of
   each file buffered) and runs the rule on that cluster alone
   (:func:`~refinery.dedup.semantic_shuffle.decide_cluster`: the paper's order, each member's best
   claim, the resolution to a kept copy); the decisions go back to the member's piece;
5. ``collect`` (P): a piece's decisions in row order, one file, with its counts.

The engine's workers then write the stage, a slice each (:class:`SliceDecisions`): a slice's rows
with their decisions, read by position from the ``collect`` files that hold them; the step never
reads a row. On an object store root the tasks and the workers get the shuffle folder's URI (with
the root's query), never a filesystem object, and the stage's parts are committed as every other
ray stage's there (:mod:`refinery.engine.object_parts`: written in place, the manifest last).
(:class:`ShuffledSemanticDeduper` streams the same files beside the upstream rows, a
batch at a time, where one process writes.) Memory per task: one piece (``slice_rows`` vectors), or in
``decide`` the largest cluster (its members' and claims' vectors, the similarity tiles) plus one
256-row group per input file (P plus the claims' chunks: a term that grows with the corpus, by
0.4 MB per file at dimension 384); the driver holds the sample, the centroids and per-task counts.

**When the result can differ from the in-process plan.** Both fit the same sample with the same
seed and assign every document to its nearest final centroid. Nearest-centroid products are
computed over blocks of another shape (a piece rather than the whole partition); a float32 dot
product may then differ in its last bit, which changes an assignment only for a document exactly
equidistant (to float32 precision) from two centroids. Everything else (the order within a
cluster, the scores, the ties) is computed by the same functions on the same vectors.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.batch import BatchResult
from refinery.dedup.marked_shuffle import TaskOutput, WorkDir, committed, to_stem
from refinery.dedup.semantic import (
    Decision,
    SemanticDeduper,
    SemanticDedupParams,
    SemanticPlan,
    StoredClaims,
    epsilon_grid,
    origin_label,
    sample_positions,
    semantic_report,
    spherical_kmeans,
    stale_error,
)
from refinery.dedup.semantic_shuffle import assign, decide_cluster
from refinery.engine.resume import data_version, under_root
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import (
    Slice,
    current_slice,
    partition_files,
    plan_slices,
    slice_location,
    slice_start,
)
from refinery.engine.tasks import TaskRunner
from refinery.ids import doc_key
from refinery.names import DOCUMENT_EMBEDDINGS, SEMANTIC_DEDUPLICATED
from refinery.object_storage import ObjectStorage, open_storage
from refinery.partition_tables import read_schema, table_files, table_location
from refinery.quality.embeddings import text_hash
from refinery.storage import PROVENANCE_KEY, Storage

SHUFFLE_DIR = "_shuffle"
ROW_GROUP_ROWS = 256  # the reducer buffers one row group of each file it merges (~0.4 MB at dim 384)
SPILL_ROWS = 32_768  # a claim task writes a sorted chunk per this many rows
ROWS_PER_REDUCER = 250_000  # reducers grow with the corpus (time per task, not memory)
CLAIM_SHIFT = 40  # a claim's position: (its partition's rank << 40) + its row in that partition's stream
DECISION_SCHEMA = pa.schema(
    [
        pa.field("position", pa.int64()),
        pa.field("key", pa.string()),
        pa.field("cluster", pa.int32()),
        pa.field("duplicate", pa.bool_()),
        pa.field("neighbour", pa.string()),
        pa.field("similarity", pa.float64()),
        pa.field("nn_similarity", pa.float64()),
        pa.field("trigger", pa.string()),
        pa.field("trigger_similarity", pa.float64()),
        pa.field("score", pa.float64()),
    ]
)


@dataclass
class SemanticJob:
    """What every task needs: the pieces, where each starts, the claims' sources, the parameters."""

    source: str
    upstream: str
    root: str  # the storage root (a path, or an object store URI with its query)
    pieces: list[Slice]
    starts: list[int]
    claim_sources: list[str]  # other partitions, in the order plan() streams them
    model: str
    dim: int
    params: SemanticDedupParams
    reducers: int
    work: str  # the shuffle's folder: a path, or a URI with the root's query
    measure: bool = False  # record each task's peak RSS (reset per task: for worker processes)
    upstream_at: str = ""  # the upstream partition's location (a path, or its folder's URI)
    stamp: str = ""  # the shuffle's folder relative to the root (what the workers are told)

    @property
    def rows(self) -> int:
        return int(self.starts[-1] + self.pieces[-1].rows) if self.pieces else 0

    def step(self, name: str) -> str:
        return RootFolder(self.work).sub(name).name

    def piece_of(self, positions: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.asarray(self.starts), positions, side="right") - 1


# -- memory ------------------------------------------------------------------------------------
class PeakMemory:
    """The peak RSS of this process during one task: the kernel's high-water mark, reset at the
    start (``/proc/self/clear_refs``); None where that is not available or not asked for."""

    def __init__(self, on: bool):
        self.on = on and _write("/proc/self/clear_refs", "5")
        self.start = _status("VmRSS") if self.on else None

    def result(self) -> dict:
        """What every task returns beside its counts: its peak and where it ran."""
        return {"peak_rss": self.bytes(), "start_rss": self.start, "node": where()}

    def bytes(self) -> int | None:
        return _status("VmHWM") if self.on else None


def _status(field: str) -> int | None:
    """A size from ``/proc/self/status`` in bytes (VmRSS, VmHWM)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return None


def where() -> str:
    """The Ray node this task runs on, or ``local`` outside a Ray worker."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except ImportError:
        pass
    return "local"


def release_memory() -> None:
    """Freed memory back to the system (Arrow's pool and glibc's heap), so a task's footprint is
    its current cluster, not the high-water mark of the clusters before it."""
    pa.default_memory_pool().release_unused()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def _write(path: str, text: str) -> bool:
    try:
        with open(path, "w") as fh:
            fh.write(text)
        return True
    except OSError:
        return False


# -- reading and writing rows ------------------------------------------------------------------
def _vectors(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    flat = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    if not len(flat):
        return np.zeros((0, dim), np.float32)
    return np.array(flat.flatten().to_numpy(zero_copy_only=False), dtype=np.float32).reshape(-1, dim)


def _vector_array(vectors: np.ndarray, dim: int) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(np.asarray(vectors, np.float32).reshape(-1)), dim)


def _read_piece(piece: Slice, columns: list[str]) -> pa.Table:
    parquet = piece.parquet()
    if not piece.row_groups:
        return parquet.schema_arrow.empty_table().select(columns)
    return parquet.read_row_groups(list(piece.row_groups), columns=columns)


def read_range(location: Path | str, start: int, stop: int, columns: list[str]) -> pa.Table:
    """Rows ``[start, stop)`` of a partition (a file or a folder of parts, or a partition's URI on
    an object store root), reading only the row groups that overlap them."""
    tables, offset = [], 0
    files, fs_uri = partition_files(location)
    for file in files:
        parquet = Slice(0, file, (), 0, fs_uri).parquet()
        for g in range(parquet.metadata.num_row_groups):
            rows = parquet.metadata.row_group(g).num_rows
            lo, hi = max(start, offset), min(stop, offset + rows)
            if lo < hi:
                tables.append(parquet.read_row_group(g, columns=columns).slice(lo - offset, hi - lo))
            offset += rows
            if offset >= stop:
                break
        if offset >= stop:
            break
    if not tables:
        return Slice(0, files[0], (), 0, fs_uri).parquet().schema_arrow.empty_table().select(columns)
    return pa.concat_tables(tables)


class Spill:
    """A task's rows for each destination, written as chunks (``to-<k>/t-<task>.<attempt>.<chunk>.parquet``),
    each sorted by ``sort_by``, whenever ``limit`` rows wait: a task's memory holds at most ``limit`` rows."""

    def __init__(self, out: TaskOutput, parts: int, sort_by: Sequence[str], limit: int = SPILL_ROWS):
        self.out, self.parts, self.sort_by, self.limit = out, parts, list(sort_by), limit
        self.pending: list[tuple[pa.Table, np.ndarray]] = []
        self.rows = self.chunk = 0

    def add(self, table: pa.Table, destination: np.ndarray) -> None:
        if table.num_rows:
            self.pending.append((table, np.asarray(destination, np.int64)))
            self.rows += table.num_rows
        if self.rows >= self.limit:
            self.flush()

    def flush(self) -> None:
        if not self.rows:
            return
        table = pa.concat_tables([t for t, _ in self.pending])
        destination = np.concatenate([d for _, d in self.pending])
        keys = [table.column(c).to_numpy() for c in reversed(self.sort_by)]
        order = np.lexsort([*keys, destination])
        sorted_dest = destination[order]
        bounds = np.flatnonzero(np.diff(sorted_dest)) + 1
        for s, e in zip(np.r_[0, bounds], np.r_[bounds, len(order)], strict=True):
            k = int(sorted_dest[s])
            if not 0 <= k < self.parts:
                raise ValueError(f"destination {k} outside [0, {self.parts})")
            self.out.write(
                to_stem(k), table.take(pa.array(order[s:e])), chunk=self.chunk, row_group_size=ROW_GROUP_ROWS
            )
        self.pending, self.rows, self.chunk = [], 0, self.chunk + 1


def sent_to(step: str, k: int) -> list[str]:
    """Every chunk the committed tasks of ``step`` sent to destination ``k`` (paths on the step's
    filesystem), in task and chunk order."""
    return [path for _, _, path in committed(step, to_stem(k))]


def _open(path: str | Path, filesystem: Any = None) -> pq.ParquetFile:
    """A Parquet file, read through ``filesystem`` (None: a local path)."""
    return pq.ParquetFile(filesystem.open_input_file(str(path)) if filesystem is not None else path)


class _Cursor:
    """One file sorted by cluster, read a row group at a time."""

    def __init__(self, path: str | Path, filesystem: Any = None):
        self.file = _open(path, filesystem)
        self.group = 0
        self.buffer: pa.Table | None = None
        self.clusters = np.zeros(0, np.int64)

    def head(self) -> int | None:
        while not len(self.clusters):
            if self.group >= self.file.metadata.num_row_groups:
                return None
            self.buffer = self.file.read_row_group(self.group)
            self.clusters = self.buffer.column("cluster").to_numpy()
            self.group += 1
        return int(self.clusters[0])

    def take(self, cluster: int) -> list[pa.Table]:
        """The rows of ``cluster`` at the head of the file (reading on while the group ends in it)."""
        out = []
        while self.head() == cluster:
            n = int(np.searchsorted(self.clusters, cluster, side="right"))
            out.append(self.buffer.slice(0, n))
            self.buffer, self.clusters = self.buffer.slice(n), self.clusters[n:]
        return out


def clusters_of(files: Sequence[str | Path], filesystem: Any = None) -> Iterator[tuple[int, pa.Table]]:
    """Each cluster's rows from files sorted by cluster (paths on ``filesystem``; None: local), one
    cluster at a time in ascending order."""
    cursors = [_Cursor(f, filesystem) for f in files]
    while True:
        heads = [h for h in (c.head() for c in cursors) if h is not None]
        if not heads:
            return
        cluster = min(heads)
        yield cluster, pa.concat_tables([t for c in cursors for t in c.take(cluster)])


# -- 1. the alignment check and the sample -----------------------------------------------------
def sample_task(step: str, p: int, job: SemanticJob, upstream_path: str, positions: np.ndarray) -> dict:
    out, peak = TaskOutput(step, p), PeakMemory(job.measure)
    piece, start = job.pieces[p], int(job.starts[p])
    table = _read_piece(piece, ["id", "text_hash", "embedding"])
    documents = read_range(upstream_path, start, start + table.num_rows, ["id", "text"])
    stale = None
    if table.column("id").to_pylist() != documents.column("id").to_pylist():
        stale = "the documents differ"
    elif table.column("text_hash").to_pylist() != [
        text_hash(t) for t in documents.column("text").to_pylist()
    ]:
        stale = "a document's text changed"
    local = np.asarray(positions, np.int64) - start
    vectors = _vectors(table.column("embedding"), job.dim)[local]
    out.write(
        "sample",
        pa.table({"position": pa.array(positions, pa.int64()), "vector": _vector_array(vectors, job.dim)}),
    )
    return out.commit({"rows": table.num_rows, "stale": stale, **peak.result()})


# -- 3. every member and claim to its cluster's reducer ------------------------------------------
def _rows(clusters, kind: int, positions, keys, vectors, dim: int) -> pa.Table:
    return pa.table(
        {
            "cluster": pa.array(clusters, pa.int64()),
            "kind": pa.array(np.full(len(keys), kind, np.int8)),
            "position": pa.array(positions, pa.int64()),
            "key": pa.array(keys, pa.string()),
            "vector": _vector_array(vectors, dim),
        }
    )


def assign_task(step: str, i: int, job: SemanticJob, centroids: np.ndarray) -> dict:
    """Task ``i < P``: piece ``i``'s documents; ``i >= P``: claim source ``i - P``'s kept documents."""
    out, peak = TaskOutput(step, i), PeakMemory(job.measure)
    spill = Spill(out, job.reducers, ["cluster", "kind", "position"])
    pieces = len(job.pieces)
    if i < pieces:
        table = _read_piece(job.pieces[i], ["id", "embedding"])
        vectors = _vectors(table.column("embedding"), job.dim)
        clusters = assign(vectors, centroids)
        keys = [doc_key(job.source, d) for d in table.column("id").to_pylist()]
        positions = job.starts[i] + np.arange(len(keys), dtype=np.int64)
        spill.add(_rows(clusters, 0, positions, keys, vectors, job.dim), clusters % job.reducers)
        result = {"rows": len(keys)}
    else:
        rank = i - pieces
        other = job.claim_sources[rank]
        storage = open_storage(job.root)
        claims = StoredClaims(storage, job.source, job.model, job.dim, job.params.claims_block_rows)
        row = 0
        for keys, block in claims.partition_blocks(other):
            clusters = assign(np.asarray(block, np.float32), centroids)
            positions = (rank << CLAIM_SHIFT) + row + np.arange(len(keys), dtype=np.int64)
            spill.add(_rows(clusters, 1, positions, keys, block, job.dim), clusters % job.reducers)
            row += len(keys)
        result = {"claims": row, "source": other, "used": claims.sources.get(other)}
        result["skipped"] = claims.skipped.get(other)
    spill.flush()
    return out.commit({**result, **peak.result()})


# -- 4. the rule, one cluster at a time ----------------------------------------------------------
def _decision_table(positions: np.ndarray, keys: list[str], decisions: list[Decision]) -> pa.Table:
    return pa.table(
        {
            "position": pa.array(positions, pa.int64()),
            "key": pa.array(keys, pa.string()),
            "cluster": pa.array([d.cluster for d in decisions], pa.int32()),
            "duplicate": pa.array([d.duplicate for d in decisions], pa.bool_()),
            "neighbour": pa.array([d.neighbour for d in decisions], pa.string()),
            "similarity": pa.array([d.similarity for d in decisions], pa.float64()),
            "nn_similarity": pa.array([d.nn_similarity for d in decisions], pa.float64()),
            "trigger": pa.array([d.trigger for d in decisions], pa.string()),
            "trigger_similarity": pa.array([d.trigger_similarity for d in decisions], pa.float64()),
            "score": pa.array([d.score for d in decisions], pa.float64()),
        },
        schema=DECISION_SCHEMA,
    )


def decide_task(step: str, r: int, job: SemanticJob, centroids: np.ndarray) -> dict:
    out, peak = TaskOutput(step, r), PeakMemory(job.measure)
    spill = Spill(out, len(job.pieces), ["position"])
    sizes: list[list[int]] = []
    largest_rows = 0
    assigned = job.step("assign")
    files = sent_to(assigned, r)
    for cluster, rows in clusters_of(files, RootFolder(assigned).fs):
        largest_rows = max(largest_rows, rows.num_rows)
        frame = rows.select(["kind", "position", "key"]).to_pandas()
        members = np.flatnonzero(frame["kind"].to_numpy() == 0)
        if not len(members):
            continue
        claims = np.flatnonzero(frame["kind"].to_numpy() == 1)
        members = members[np.argsort(frame["position"].to_numpy()[members], kind="stable")]
        claims = claims[np.argsort(frame["position"].to_numpy()[claims], kind="stable")]
        vectors = _vectors(rows.column("vector"), job.dim)
        keys = frame["key"].to_numpy(dtype=object)
        member_keys = keys[members].tolist()
        decisions = decide_cluster(
            cluster,
            member_keys,
            vectors[members],
            keys[claims].tolist(),
            vectors[claims],
            centroids[cluster],
            job.params,
        )
        positions = frame["position"].to_numpy()[members]
        spill.add(_decision_table(positions, member_keys, decisions), job.piece_of(positions))
        sizes.append([cluster, len(members)])
        del rows, frame, vectors
        release_memory()  # what one cluster took goes back: the next starts from the same level
    spill.flush()
    return out.commit({"sizes": sizes, "largest_rows": largest_rows, "files": len(files), **peak.result()})


# -- 5. a piece's decisions in row order ---------------------------------------------------------
def collect_task(step: str, p: int, job: SemanticJob) -> dict:
    out, peak = TaskOutput(step, p), PeakMemory(job.measure)
    decided = job.step("decide")
    files, filesystem = sent_to(decided, p), RootFolder(decided).fs
    tables = [pq.read_table(f, filesystem=filesystem) for f in files]
    table = pa.concat_tables(tables) if tables else DECISION_SCHEMA.empty_table()
    table = table.take(pa.array(np.argsort(table.column("position").to_numpy(), kind="stable")))
    start, rows = int(job.starts[p]), job.pieces[p].rows
    if not np.array_equal(table.column("position").to_numpy(), np.arange(start, start + rows)):
        raise RuntimeError(f"piece {p} of {job.source}: {table.num_rows} decisions for {rows} documents")
    out.write("decisions", table, row_group_size=8192)
    duplicate = table.column("duplicate").to_numpy(zero_copy_only=False)
    score = table.column("score").to_numpy()
    origins: dict[str, int] = {}
    for neighbour in np.asarray(table.column("neighbour").to_pylist(), dtype=object)[duplicate]:
        if neighbour:
            label = origin_label(neighbour, job.source)
            origins[label] = origins.get(label, 0) + 1
    removed_at = {repr(e): int((score >= 1.0 - e).sum()) for e in epsilon_grid(job.params.epsilon)}
    return out.commit(
        {
            "rows": rows,
            "removed": int(duplicate.sum()),
            "origins": origins,
            "removed_at": removed_at,
            **peak.result(),
        }
    )


# -- the driver --------------------------------------------------------------------------------
def embeddings_identity(storage: Storage | ObjectStorage, source: str) -> tuple[Path | str, str, int]:
    """(where the partition's document_embeddings are: a path, or its folder's URI on an object
    store root; its model; its dimension), or the error ``plan``'s path gives."""
    files = table_files(storage, DOCUMENT_EMBEDDINGS, source)
    if not files:
        raise FileNotFoundError(
            f"no document embeddings for partition '{source}' at "
            f"{table_location(storage, DOCUMENT_EMBEDDINGS, source)}: materialize document_embeddings "
            "for it first"
        )
    schema = read_schema(storage, files)
    meta = json.loads((schema.metadata or {}).get(PROVENANCE_KEY, b"{}"))
    location = slice_location(storage, DOCUMENT_EMBEDDINGS, source)
    return location, meta.get("model", "unknown"), schema.field("embedding").type.list_size


def _version(storage: Storage | ObjectStorage, asset: str, partition: str) -> str | None:
    """What changes when a partition's rows change (its manifest's hash, or its files' names, sizes
    and times), None when it has none: a changed input gives the shuffle another folder."""
    if not table_files(storage, asset, partition):
        return None
    return data_version(slice_location(storage, asset, partition))


def make_job(
    storage: Storage | ObjectStorage,
    upstream: str,
    source: str,
    params: SemanticDedupParams,
    workers: int,
    slice_rows: int,
    measure: bool,
) -> SemanticJob:
    path, model, dim = embeddings_identity(storage, source)
    pieces = plan_slices(path, slice_rows)
    rows = np.array([p.rows for p in pieces], dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(rows)[:-1]]).astype(np.int64).tolist()
    others = [p for p in storage.partitions(SEMANTIC_DEDUPLICATED) if p != source]
    claim_sources = others if params.against_other_sources else []
    claim_rows = sum(storage.row_count(SEMANTIC_DEDUPLICATED, p) for p in claim_sources)
    reducers = max(1, workers, -(-(int(rows.sum()) + claim_rows) // ROWS_PER_REDUCER))
    identity = [[p.file, list(p.row_groups), p.rows] for p in pieces]
    versions = [[DOCUMENT_EMBEDDINGS, source, _version(storage, DOCUMENT_EMBEDDINGS, source)]]
    for other in claim_sources:
        for asset in (SEMANTIC_DEDUPLICATED, DOCUMENT_EMBEDDINGS):
            versions.append([asset, other, _version(storage, asset, other)])
    upstream_at = slice_location(storage, upstream, source)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "params": params.model_dump(),
                "pieces": identity,
                "claims": claim_sources,
                "files": versions,
                "upstream": [str(upstream_at), data_version(upstream_at)],
                "reducers": reducers,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()[:16]
    stamp = f"{SHUFFLE_DIR}/{SEMANTIC_DEDUPLICATED}/{source}/{fingerprint}"
    return SemanticJob(
        source, upstream, str(storage.root), pieces, starts, claim_sources, model, dim, params, reducers,
        str(under_root(storage, stamp)), measure, str(upstream_at), stamp,
    )  # fmt: skip


@dataclass
class ShuffleFigures:
    """What the steps returned, summed for the metadata."""

    clusters: int = 0
    sizes: list[int] = field(default_factory=list)
    claims_compared: int = 0
    sources: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    origins: dict[str, int] = field(default_factory=dict)
    removed_at: dict[float, int] = field(default_factory=dict)
    removed: int = 0
    rows: int = 0
    largest_cluster_rows: int = 0
    reducer_files: int = 0  # the most files one reducer merged (one row group of each buffered)
    seconds: dict[str, float] = field(default_factory=dict)
    peak_rss: dict[str, int] = field(default_factory=dict)  # step -> the largest task's peak
    growth: dict[str, int] = field(default_factory=dict)  # step -> the largest growth of a task's RSS
    nodes: set[str] = field(default_factory=set)  # where the tasks ran
    tasks: dict[str, int] = field(default_factory=dict)


def run_shuffle(job: SemanticJob, upstream_rows: int, runner: TaskRunner) -> ShuffleFigures:
    """Every step of ``job`` with ``runner``; the decisions stay in the ``collect`` folders."""
    figures = ShuffleFigures()
    work = WorkDir(job.work)
    clock = time.perf_counter

    def timed(name: str, fn, args) -> list[dict]:
        t0 = clock()
        found = work.run(runner, name, fn, args)
        figures.seconds[name] = round(clock() - t0, 3)
        figures.tasks[name] = len(args)
        figures.nodes |= {r["node"] for r in found if r.get("node")}
        peaks = [r["peak_rss"] for r in found if r.get("peak_rss")]
        if peaks:
            figures.peak_rss[name] = max(peaks)
            figures.growth[name] = max(r["peak_rss"] - r["start_rss"] for r in found if r.get("peak_rss"))
        return found

    n = job.rows
    if n != upstream_rows:
        raise stale_error(job.source, job.upstream, f"it has {n} rows for {upstream_rows} documents")
    params = job.params
    figures.removed_at = dict.fromkeys(epsilon_grid(params.epsilon), 0)
    if n == 0:  # nothing to decide (as plan() returns for an empty partition)
        return figures
    positions = sample_positions(n, params.kmeans_sample_rows)
    owner = job.piece_of(positions)
    sampled = timed(
        "sample",
        sample_task,
        [(job, job.upstream_at, positions[owner == p]) for p in range(len(job.pieces))],
    )
    for result in sampled:
        if result["stale"]:
            raise stale_error(job.source, job.upstream, result["stale"])
    t0 = clock()
    samples = RootFolder(job.step("sample"))
    files = committed(samples, "sample")
    if [task for task, _, _ in files] != list(range(len(job.pieces))):
        where = samples.name.partition("?")[0]
        raise RuntimeError(f"semantic dedup of '{job.source}': a sample task's file is missing under {where}")
    tables = [pq.read_table(path, filesystem=samples.fs) for _, _, path in files]
    sample = _vectors(pa.concat_tables(tables).column("vector"), job.dim)
    k = params.clusters or math.ceil(n / params.docs_per_cluster)
    centroids = spherical_kmeans(sample, k, params.kmeans_iterations, params.seed)[0].cpu().numpy()
    figures.seconds["kmeans"] = round(clock() - t0, 3)
    figures.clusters = len(centroids)
    tasks = len(job.pieces) + len(job.claim_sources)
    assigned = timed("assign", assign_task, [(job, centroids)] * tasks)
    for result in assigned[len(job.pieces) :]:
        figures.claims_compared += result["claims"]
        if result["skipped"]:
            figures.skipped[result["source"]] = result["skipped"]
        if result["used"] is not None:
            figures.sources[result["source"]] = result["used"]
    decided = timed("decide", decide_task, [(job, centroids)] * job.reducers)
    sizes = np.zeros(len(centroids), np.int64)
    for result in decided:
        for cluster, count in result["sizes"]:
            sizes[cluster] = count
        figures.largest_cluster_rows = max(figures.largest_cluster_rows, result["largest_rows"])
        figures.reducer_files = max(figures.reducer_files, result["files"])
    figures.sizes = sizes.tolist()
    collected = timed("collect", collect_task, [(job,)] * len(job.pieces))
    for result in collected:
        figures.rows += result["rows"]
        figures.removed += result["removed"]
        for label, count in result["origins"].items():
            figures.origins[label] = figures.origins.get(label, 0) + count
        for e, count in result["removed_at"].items():
            figures.removed_at[float(e)] = figures.removed_at.get(float(e), 0) + count
    return figures


def decision_files(job: SemanticJob) -> list[str]:
    """The ``collect`` step's files, in row order (none for an empty partition): paths on the
    filesystem of ``job.step("collect")`` (local paths on a local root)."""
    if not job.rows:
        return []
    return _collected(job.step("collect"), len(job.pieces))


def _collected(step: str, pieces: int | None = None) -> list[str]:
    """The committed ``decisions`` files of the ``collect`` step, one per piece in row order."""
    files = committed(step, "decisions")
    tasks = [task for task, _, _ in files]
    if tasks != list(range(pieces if pieces is not None else len(files))):
        raise RuntimeError(
            f"semantic dedup: the collect step under {step.partition('?')[0]} is incomplete (tasks {tasks}): "
            "materialize the partition again"
        )
    return [path for _, _, path in files]


def decisions_of(batch: pa.RecordBatch | pa.Table) -> Iterator[tuple[str, Decision]]:
    """(key, decision) per row of a ``collect`` file's batch, in its order."""
    for row in batch.to_pylist():
        yield (
            row["key"],
            Decision(
                row["cluster"],
                row["similarity"],
                row["neighbour"],
                row["duplicate"],
                row["nn_similarity"],
                row["trigger"],
                row["trigger_similarity"],
                row["score"],
            ),
        )


def take_decisions(
    stream: Iterator[tuple[str, Decision]], source: str, frame: pd.DataFrame
) -> list[Decision]:
    """The next decisions of ``stream``, one per row of ``frame``, each checked to be that row's."""
    decided = []
    for doc_id in frame["id"].tolist():
        key, decision = next(stream, (None, None))
        if key != doc_key(source, doc_id):
            raise RuntimeError(
                f"semantic dedup of '{source}': the decision for row {doc_id!r} is for {key!r}: "
                "the upstream partition changed during the run; materialize it again"
            )
        decided.append(decision)
    return decided


class ShuffledSemanticDeduper(SemanticDeduper):
    """Applies the decisions the tasks wrote, read one row group at a time beside the upstream
    batches (the partition's rows in order: each decision's key must be the row's)."""

    def __init__(self, job: SemanticJob, figures: ShuffleFigures, engine: str, device: str = "cpu"):
        params = job.params
        plan = SemanticPlan(
            {}, figures.clusters, None, figures.seconds.get("kmeans", 0.0), figures.sizes, params.rule
        )
        super().__init__(plan, params, job.source, device, job.model)
        self.job, self.figures, self.engine = job, figures, engine
        self._stream = self._decisions()

    def _decisions(self) -> Iterator[tuple[str, Decision]]:
        filesystem = RootFolder(self.job.step("collect")).fs
        for file in decision_files(self.job):
            for batch in _open(file, filesystem).iter_batches(batch_size=8192):
                yield from decisions_of(batch)

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        return self.apply(frame, take_decisions(self._stream, self.source, frame))

    def origins(self) -> dict[str, int]:
        return dict(self.figures.origins)

    def report(self) -> dict:
        f, mb = self.figures, 2**20
        out = semantic_report(
            self.params,
            f.clusters,
            f.sizes,
            {
                "kmeans_seconds": f.seconds.get("kmeans", 0.0),
                "claims_compared": f.claims_compared,
                "claims_seconds": f.seconds.get("assign", 0.0),
                "device": self.device,
                "embeddings_model": self.embeddings_model,
            },
            f.sources,
            f.skipped,
            f.origins,
            f.removed_at if self.params.rule == "semdedup" else None,
            f.rows,
        )
        vector_bytes = 4 * self.job.dim
        out["distributed"] = {
            "engine": self.engine,
            "kmeans_sample_rows": min(self.params.kmeans_sample_rows, f.rows),
            "tasks": f.tasks,
            "reducers": self.job.reducers,
            "nodes": len(f.nodes),
            "seconds": f.seconds,
            "largest_cluster_rows": f.largest_cluster_rows,  # members and claims
            "largest_cluster_vector_mb": round(f.largest_cluster_rows * vector_bytes / mb, 2),
            "reducer_input_files": f.reducer_files,
            "peak_rss_mb_per_task": {step: round(b / mb, 1) for step, b in f.peak_rss.items()},
            "peak_growth_mb_per_task": {step: round(b / mb, 1) for step, b in f.growth.items()},
        }
        return out


class SliceDecisions(SemanticDeduper):
    """A worker's copy of the stage on a distributed engine: it writes the slices it is given, each
    with the decisions of that slice's rows, read from the ``collect`` files that hold them (by
    position, the partition's row order). The step ran the shuffle and never reads the rows; each
    worker holds one slice's decisions."""

    def __init__(
        self,
        work: Path | str,
        upstream: Path | str,
        params: SemanticDedupParams,
        source: str,
        model: str = "",
    ):
        super().__init__(SemanticPlan({}, 0, None, rule=params.rule), params, source, "cpu", model)
        # Local paths, or URIs with the root's query (an object store root): opened per process.
        self.work, self.upstream = str(work), upstream
        self._slice: int | None = None
        self._stream: Iterator[tuple[str, Decision]] = iter(())
        self._index: list[tuple[int, str]] | None = None

    def _files(self) -> list[tuple[int, str]]:
        """(first position, file) of each collect file, in row order: listed and their footers read
        once per worker (the step committed them before any worker started)."""
        if self._index is None:
            step = RootFolder(self.work).sub("collect")
            out, start = [], 0
            for file in _collected(step.name):
                out.append((start, file))
                start += _open(file, step.fs).metadata.num_rows
            self._index = out
        return self._index

    def _slice_decisions(self, start: int, rows: int) -> Iterator[tuple[str, Decision]]:
        stop = start + rows
        files = self._files()
        filesystem = RootFolder(self.work).fs
        for i, (first, file) in enumerate(files):
            end = files[i + 1][0] if i + 1 < len(files) else math.inf
            if end <= start or first >= stop:
                continue
            table = pq.read_table(file, filesystem=filesystem)
            yield from decisions_of(table.slice(max(0, start - first), min(stop, end) - max(start, first)))

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        piece = current_slice()
        if piece is None:
            raise RuntimeError("semantic_deduplicated's decided copy runs per slice on an engine's workers")
        if piece.index != self._slice:
            start = slice_start(self.upstream, piece)
            self._slice, self._stream = piece.index, self._slice_decisions(start, piece.rows)
        return self.apply(frame, take_decisions(self._stream, self.source, frame))


def plan_stamp(storage: Storage | ObjectStorage, job: SemanticJob) -> str:
    """What the step puts in the provenance for the workers: the shuffle's folder, relative to the
    storage root (named by the inputs' fingerprint, so a repeated run stamps the same)."""
    return job.stamp


def slice_deduper(
    storage: Storage | ObjectStorage,
    upstream: str,
    source: str,
    params: SemanticDedupParams,
    stamp: str,
    model: str = "",
) -> SliceDecisions:
    """The processor a worker builds from the step's :func:`plan_stamp` (on any root: the folders
    travel as paths or URIs)."""
    work = under_root(storage, stamp)
    return SliceDecisions(work, slice_location(storage, upstream, source), params, source, model)


def remove_work(storage: Storage | ObjectStorage, source: str) -> None:
    """The partition's shuffle files (this run's, and those of runs over inputs since changed)."""
    RootFolder(str(under_root(storage, f"{SHUFFLE_DIR}/{SEMANTIC_DEDUPLICATED}/{source}"))).remove()


def distributed_deduper(
    storage: Storage | ObjectStorage,
    upstream: str,
    source: str,
    params: SemanticDedupParams,
    runner: TaskRunner,
    workers: int,
    slice_rows: int = 20_000,
    engine: str = "",
    measure: bool | None = None,
) -> ShuffledSemanticDeduper:
    """Run the steps for ``source`` on ``runner`` and return the processor that applies their
    decisions. Call :func:`remove_work` once the stage's files are written.

    The shuffle's files go under ``<root>/_shuffle/semantic_deduplicated/<source>/<fingerprint>/``
    on a local root or an object store root alike (committed by done markers, not renames); a
    rerun over the same inputs skips the tasks already committed."""
    measure = runner.name != "local" if measure is None else measure
    job = make_job(storage, upstream, source, params, workers, slice_rows, measure)
    upstream_rows = storage.row_count(upstream, source)
    figures = run_shuffle(job, upstream_rows, runner)
    return ShuffledSemanticDeduper(job, figures, engine or runner.name)


__all__ = [
    "ShuffledSemanticDeduper",
    "SliceDecisions",
    "clusters_of",
    "distributed_deduper",
    "make_job",
    "plan_stamp",
    "remove_work",
    "run_shuffle",
    "slice_deduper",
]
