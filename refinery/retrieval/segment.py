"""One partition's vectors in the index: a faiss HNSW graph plus the ids, built from one file.

A segment is a folder ``segments/<partition>-<token>/`` holding ``graph.faiss`` (a faiss
``IndexHNSWFlat``, inner product; faiss labels are the row numbers of the source file) and
``ids.parquet`` (the id of every row), built from ``storage/<asset>/<partition>.parquet``. It is never
modified: a re-materialized partition gets a new segment and the partition's manifest
(``<partition>.json``, see :mod:`refinery.retrieval.index`) is switched to it in one rename.

Why faiss (measured on one core in benchmarks/bench_retrieval.py, figures in docs/retrieval.md):
against usearch's HNSW with the same M and efConstruction it builds about 1.7 times faster and
answers 2.5-3 times more queries per second at the same recall@10; a saved graph opens
memory-mapped (``IO_FLAG_MMAP_IFC``: milliseconds, and the pages are shared between processes
instead of copied into each heap); and its search takes an id filter (``IDSelectorBitmap``), which
the nearest-kept search of semantic dedup uses. usearch's one advantage here, deleting single
vectors, is not needed: a partition's vectors are replaced whole. DuckDB's vss extension (usearch
inside DuckDB) pins duckdb 1.5.5, marks its persistence experimental (no WAL recovery), built
100k vectors several times slower and costs a SQL statement per query.

Exact search does not read the graph: it streams the source file's vectors in blocks (a matrix
product per block, a running top-k), so it needs memory for one block, not for the partition, and
it equals brute force. It refuses a source file that changed since the segment was built.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from refinery.manifest import read_manifest
from refinery.object_storage import ObjectStorage, open_storage
from refinery.partition_tables import table_files, table_location
from refinery.storage import PROVENANCE_KEY, Storage

FORMAT_VERSION = 1
GRAPH_FILE = "graph.faiss"
IDS_FILE = "ids.parquet"


class IndexParams(BaseModel):
    """HNSW settings. The defaults reach recall@10 ≥ 0.95 on MiniLM embeddings of real text (0.998) and
    on the clustered synthetic benchmark at 100k (0.987) and 1M vectors (0.963); efSearch 64 would be
    1.7 times faster but falls to 0.943 at 1M (docs/retrieval.md has the figures)."""

    connectivity: int = Field(16, ge=2, le=256, description="HNSW M: neighbours kept per node and layer.")
    expansion_add: int = Field(128, ge=8, description="Candidate list while building (efConstruction).")
    expansion_search: int = Field(
        128, ge=1, description="Candidate list while searching (efSearch); raised to k when k is larger."
    )
    dtype: Literal["f32", "f16"] = Field(
        "f32", description="How the graph stores vectors: f32 (1.5 KB per 384-d vector) or f16 (half)."
    )
    threads: int = Field(
        1, ge=0, description="OpenMP threads for building and searching (0: faiss's default)."
    )
    batch_rows: int = Field(20_000, ge=1, description="Rows read from the source file and added per step.")


class StaleSegment(RuntimeError):
    """The source file changed after the segment was built: update the partition's segment first."""


@dataclass
class SourceFingerprint:
    """Identifies the version of a partition's stored vectors. A local file is replaced whole (atomic
    rename), so a new version has a new inode / size / modification time. On an object-store root
    (``root`` set) the source is the parts the partition's manifest lists, and the manifest's version
    (a hash of the parts' rows and bytes) identifies it; ``file`` then names the folder."""

    file: str
    size: int
    mtime_ns: int
    inode: int
    root: str = ""  # the object-store root's URI (empty: a local file)
    asset: str = ""
    partition: str = ""
    version: str = ""

    @classmethod
    def of(cls, path: Path) -> SourceFingerprint:
        st = path.stat()
        return cls(str(path), st.st_size, st.st_mtime_ns, st.st_ino)

    @classmethod
    def of_table(cls, storage: Storage | ObjectStorage, asset: str, partition: str) -> SourceFingerprint:
        """The current version of ``asset``'s partition on a storage root (FileNotFoundError if none)."""
        if not isinstance(storage, ObjectStorage):
            folder = storage.location(asset, partition)
            if folder is None or not folder.is_dir():  # one file (or none: FileNotFoundError)
                return cls.of(storage.path(asset, partition))
            manifest = read_manifest(folder)  # a parts folder: its manifest identifies it, as below
            if manifest is None:
                raise FileNotFoundError(f"{folder} has no manifest: materialize {asset}[{partition}] again")
            size = sum(int(p["bytes"]) for p in manifest["parts"])
            return cls(str(folder), size, 0, 0, str(storage.root), asset, partition, manifest["version"])
        manifest = storage.manifest(asset, partition)
        if manifest is None:
            raise FileNotFoundError(f"no committed {asset}[{partition}] under {storage.root}")
        size = sum(int(p["bytes"]) for p in manifest["parts"])
        where = table_location(storage, asset, partition)
        return cls(where, size, 0, 0, storage.root, asset, partition, manifest["version"])

    def matches(self, path: Path) -> bool:
        try:
            return SourceFingerprint.of(path) == SourceFingerprint(
                str(path), self.size, self.mtime_ns, self.inode
            )
        except FileNotFoundError:
            return False

    def matches_table(self, storage: Storage | ObjectStorage, asset: str, partition: str) -> bool:
        try:
            return SourceFingerprint.of_table(storage, asset, partition) == self
        except FileNotFoundError:
            return False

    def is_current(self) -> bool:
        """The source still holds the version the fingerprint was taken of."""
        if not self.root:
            return self.matches(Path(self.file))
        return self.matches_table(_store(self.root), self.asset, self.partition)

    def files(self) -> tuple[pafs.FileSystem, list[str]]:
        """(the filesystem, the source's files in row order) to read the vectors from."""
        if not self.root:
            return pafs.LocalFileSystem(), [self.file]
        store = _store(self.root)
        return store.fs, table_files(store, self.asset, self.partition)


@lru_cache(maxsize=16)
def _store(root: str) -> Storage | ObjectStorage:
    """One storage per root for a process (freshness is checked on every search): an object-store
    root, or a local one whose partition is a parts folder."""
    return open_storage(root)


@dataclass
class SegmentManifest:
    collection: str
    partition: str
    segment: str  # folder name under segments/
    rows: int
    dim: int
    model: str
    metric: str
    params: dict
    source: dict  # SourceFingerprint
    provenance: dict  # the source file's provenance (model, chunking, ...)
    build_seconds: float
    created_at: float
    format: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, indent=1, default=str)

    @classmethod
    def from_json(cls, text: str) -> SegmentManifest:
        data = json.loads(text)
        if data.get("format") != FORMAT_VERSION:
            raise ValueError(
                f"vector index segment format {data.get('format')}; this Refinery reads {FORMAT_VERSION}"
            )
        return cls(**data)

    @property
    def fingerprint(self) -> SourceFingerprint:
        return SourceFingerprint(**self.source)


def read_provenance(source: SourceFingerprint) -> dict:
    filesystem, files = source.files()
    meta = pq.read_schema(files[0], filesystem=filesystem).metadata or {}
    raw = meta.get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def vector_dim(source: SourceFingerprint, column: str) -> int:
    filesystem, files = source.files()
    field = pq.read_schema(files[0], filesystem=filesystem).field(column)
    if not pa.types.is_fixed_size_list(field.type):
        raise TypeError(f"{source.file}: column {column!r} is {field.type}, not a fixed-size list of float32")
    return field.type.list_size


def iter_source_vectors(
    source: SourceFingerprint, column: str, batch_rows: int, with_ids: bool = False
) -> Iterator[tuple]:
    """(first row, ids or None, vectors (n, dim) float32) per batch of the source's files, in row order.

    One row group is decoded at a time (``iter_batches`` over the whole file reads ahead and can hold
    every row group at once), so memory is bounded by the writer's row groups (2,000 rows for
    document_embeddings) and ``batch_rows``.
    """
    dim = vector_dim(source, column)
    filesystem, files = source.files()
    start = 0
    columns = ["id", column] if with_ids else [column]
    for file in files:
        with filesystem.open_input_file(file) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.metadata.num_row_groups):
                for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns, row_groups=[group]):
                    yield _vectors_of(batch, source.file, column, dim, with_ids, start)
                    start += batch.num_rows


def _vectors_of(batch: pa.RecordBatch, path: str, column: str, dim: int, with_ids: bool, start: int) -> tuple:
    values = batch.column(column)
    if values.null_count:
        raise ValueError(f"{path}: {values.null_count} rows have no {column}")
    flat = values.flatten().to_numpy(zero_copy_only=False)
    vectors = np.asarray(flat, dtype=np.float32).reshape(-1, dim)
    ids = batch.column("id").to_pylist() if with_ids else None
    return start, ids, vectors


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def omp_threads(threads: int):
    """faiss's OpenMP thread count for a block of work, restored afterwards (0: leave it)."""
    import faiss

    before = faiss.omp_get_max_threads()
    if threads:
        faiss.omp_set_num_threads(threads)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def new_graph(dim: int, params: IndexParams):
    import faiss

    if params.dtype == "f16":
        kind = faiss.ScalarQuantizer.QT_fp16
        graph = faiss.IndexHNSWSQ(dim, kind, params.connectivity, faiss.METRIC_INNER_PRODUCT)
    else:
        graph = faiss.IndexHNSWFlat(dim, params.connectivity, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = params.expansion_add
    return graph


def build_segment(
    folder: Path,
    source: SourceFingerprint,
    column: str,
    collection: str,
    partition: str,
    params: IndexParams,
) -> SegmentManifest:
    """Build the graph and ids of the vectors ``source`` fingerprints (a local file, or an
    object-store partition's parts) into ``folder`` (which must not exist yet), fsynced.

    The manifest is returned, not written: the caller publishes it (see ``VectorIndex.update``).
    """
    started = time.perf_counter()
    fingerprint = source
    provenance = read_provenance(source)
    dim = vector_dim(source, column)
    if provenance.get("dim") not in (None, dim):
        raise ValueError(f"{source.file}: provenance says dim {provenance['dim']} but the column holds {dim}")
    folder.mkdir(parents=True)
    graph = new_graph(dim, params)
    ids: list[str] = []
    with omp_threads(params.threads):
        for start, batch_ids, vectors in iter_source_vectors(
            source, column, params.batch_rows, with_ids=True
        ):
            if not np.isfinite(vectors).all():
                raise ValueError(
                    f"{source.file}: rows {start}..{start + len(vectors) - 1} hold NaN or infinite values"
                )
            graph.add(np.ascontiguousarray(vectors))  # faiss labels: 0, 1, ... = row numbers
            ids.extend(batch_ids)
    if not fingerprint.is_current():
        raise StaleSegment(f"{source.file} was replaced while its segment was being built; build again")
    import faiss

    faiss.write_index(graph, str(folder / GRAPH_FILE))
    pq.write_table(pa.table({"id": pa.array(ids, type=pa.string())}), folder / IDS_FILE, compression="zstd")
    for name in (GRAPH_FILE, IDS_FILE):
        _fsync_file(folder / name)
    fsync_dir(folder)
    return SegmentManifest(
        collection=collection,
        partition=partition,
        segment=folder.name,
        rows=len(ids),
        dim=dim,
        model=str(provenance.get("model", "unknown")),
        metric="ip",
        params=params.model_dump(),
        source=asdict(fingerprint),
        provenance=provenance,
        build_seconds=round(time.perf_counter() - started, 3),
        created_at=time.time(),
    )


class Segment:
    """An opened (read-only) segment: the graph memory-mapped, the ids in an Arrow array."""

    def __init__(self, folder: Path, manifest: SegmentManifest, column: str):
        import faiss

        self.folder, self.manifest, self.column = folder, manifest, column
        self.ids: pa.Array = pq.read_table(folder / IDS_FILE).column("id").combine_chunks()
        flags = faiss.IO_FLAG_MMAP_IFC | faiss.IO_FLAG_READ_ONLY
        self.graph = faiss.read_index(str(folder / GRAPH_FILE), flags) if manifest.rows else None
        if len(self.ids) != manifest.rows:
            raise ValueError(f"{folder}: {len(self.ids)} ids for {manifest.rows} rows")

    @property
    def partition(self) -> str:
        return self.manifest.partition

    @property
    def rows(self) -> int:
        return self.manifest.rows

    @property
    def source(self) -> str:
        """The stored vectors' file (local) or partition folder (object store), as a person names it."""
        return self.manifest.source["file"]

    def is_fresh(self) -> bool:
        return self.manifest.fingerprint.is_current()

    def require_fresh(self) -> None:
        if not self.is_fresh():
            raise StaleSegment(
                f"the vector index segment of partition '{self.partition}' ({self.manifest.collection}) was "
                f"built from an earlier version of {self.source}: update it (VectorIndex.update, or "
                "materialize vector_index for the partition) before an exact search"
            )

    def search(
        self,
        queries: np.ndarray,
        k: int,
        expansion: int | None = None,
        threads: int = 1,
        allowed: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Approximate top-k through the graph: (rows (n, k) int64, -1 where fewer; cosines (n, k)).

        ``allowed`` (a bool per row) restricts the answer to those rows during the graph walk.
        """
        import faiss

        n = len(queries)
        rows = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        if self.graph is None or n == 0:
            return rows, scores
        params = faiss.SearchParametersHNSW()
        params.efSearch = max(k, expansion or self.manifest.params["expansion_search"])
        bitmap = selector = None  # both must outlive the search: faiss keeps raw pointers to them
        if allowed is not None:
            bitmap = np.packbits(np.asarray(allowed, dtype=bool), bitorder="little")
            selector = faiss.IDSelectorBitmap(len(allowed), faiss.swig_ptr(bitmap))
            params.sel = selector
        with omp_threads(threads):
            dist, found = self.graph.search(np.ascontiguousarray(queries, dtype=np.float32), k, params=params)
        del bitmap, selector
        valid = found >= 0
        rows[valid] = found[valid]
        scores[valid] = dist[valid]  # the inner product of unit vectors: the cosine
        return rows, scores

    def iter_vectors(self, block_rows: int) -> Iterator[tuple[int, np.ndarray]]:
        """The segment's vectors, exactly as stored in the source file, one block at a time."""
        self.require_fresh()
        seen = 0
        for start, _, vectors in iter_source_vectors(self.manifest.fingerprint, self.column, block_rows):
            seen = start + len(vectors)
            yield start, vectors
        if seen != self.rows:
            raise StaleSegment(f"{self.source} has {seen} rows, its segment {self.rows}")

    def exact_search(
        self, queries: np.ndarray, k: int, block_rows: int = 65_536
    ) -> tuple[np.ndarray, np.ndarray]:
        """Exact top-k by cosine, streaming the vectors in blocks (memory: one block, plus n × k)."""
        n = len(queries)
        rows = np.full((n, k), -1, dtype=np.int64)
        scores = np.full((n, k), -np.inf, dtype=np.float32)
        for start, block in self.iter_vectors(block_rows):
            sims = queries @ block.T
            take = min(k, sims.shape[1])
            idx = np.argpartition(-sims, take - 1, axis=1)[:, :take]
            rows, scores = merge_topk(
                rows, scores, idx.astype(np.int64) + start, np.take_along_axis(sims, idx, 1), k
            )
        return rows, scores

    def id_of(self, rows: np.ndarray) -> list[str | None]:
        rows = np.asarray(rows, dtype=np.int64)
        out: list[str | None] = [None] * len(rows)
        ok = np.flatnonzero(rows >= 0)
        if len(ok):
            for i, value in zip(ok.tolist(), self.ids.take(pa.array(rows[ok])).to_pylist(), strict=True):
                out[i] = value
        return out


def merge_topk(
    rows_a: np.ndarray, scores_a: np.ndarray, rows_b: np.ndarray, scores_b: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """The best k of two candidate lists per query, best first (ties: the lower row first)."""
    rows = np.concatenate([rows_a, rows_b], axis=1)
    scores = np.concatenate([scores_a, scores_b], axis=1).astype(np.float32)
    order = np.lexsort((rows, -scores), axis=1)[:, :k] if rows.size else np.zeros((len(rows), 0), np.int64)
    return np.take_along_axis(rows, order, 1), np.take_along_axis(scores, order, 1)
