"""The vector index of a collection: one immutable segment per partition, switched atomically.

Layout under ``$REFINERY_HOME/index/vectors/<collection>/``::

    <partition>.json                  the partition's live manifest: names its segment folder
    segments/<partition>-<token>/     graph.faiss + ids.parquet (see refinery.retrieval.segment)
    .locks/<partition>.lock           held while the partition's segment is rebuilt

Updating a partition builds a new segment under a hidden temporary name, fsyncs it, renames it into
``segments/``, then replaces the manifest with ``os.replace`` (fsynced, directory too) and only then
deletes the previous segment. A build killed at any point leaves the old manifest and its segment in
place, so no reader ever sees a half index; the leftovers of a killed build are removed by the next
update of that partition. A re-materialized partition therefore replaces its vectors as a whole, and a
removed partition's manifest goes first, so searches stop returning it at once.

Searching a collection searches every segment (HNSW per segment, or exact blocks) and merges the
per-segment top-k; results are ordered by cosine, ties by partition and then row.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from refinery.metadata import CheckOutcome, FilePath, Json
from refinery.object_storage import ObjectStorage
from refinery.paths import Layout, check_source_name
from refinery.retrieval.segment import (
    IndexParams,
    Segment,
    SegmentManifest,
    SourceFingerprint,
    StaleSegment,
    build_segment,
    fsync_dir,
)
from refinery.storage import Storage
from refinery.vector_collections import Collection, collection

VECTORS_DIR = "vectors"
SEGMENTS_DIR = "segments"
LOCKS_DIR = ".locks"


class ModelMismatch(ValueError):
    """Vectors of different models (or dimensions) would be compared: refused."""


def index_root(layout: Layout) -> Path:
    return layout.index / VECTORS_DIR


class VectorIndex:
    """A collection's segments under ``root/<collection>`` (``root``: ``$REFINERY_HOME/index/vectors``)."""

    def __init__(self, root: str | os.PathLike, which: str | Collection = "documents"):
        self.collection = collection(which)
        self.folder = Path(root) / self.collection.name
        self._open: dict[str, Segment] = {}

    @classmethod
    def at(cls, layout: Layout, which: str | Collection = "documents") -> VectorIndex:
        return cls(index_root(layout), which)

    # -- manifests --------------------------------------------------------------------------------
    def manifest_path(self, partition: str) -> Path:
        return self.folder / f"{check_source_name(partition)}.json"

    def partitions(self) -> list[str]:
        if not self.folder.is_dir():
            return []
        return sorted(p.stem for p in self.folder.glob("*.json") if not p.name.startswith("."))

    def manifest(self, partition: str) -> SegmentManifest | None:
        try:
            return SegmentManifest.from_json(self.manifest_path(partition).read_text())
        except FileNotFoundError:
            return None

    @contextmanager
    def _locked(self, partition: str):
        locks = self.folder / LOCKS_DIR
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"{check_source_name(partition)}.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _segment_dirs(self, partition: str) -> list[Path]:
        """Every segment folder of the partition, published or left by a killed build."""
        segments = self.folder / SEGMENTS_DIR
        if not segments.is_dir():
            return []
        pattern = re.compile(rf"^\.?(tmp-)?{re.escape(partition)}-[0-9a-f]{{32}}$")
        return [p for p in segments.iterdir() if pattern.match(p.name)]

    def _publish(self, manifest: SegmentManifest) -> None:
        path = self.manifest_path(manifest.partition)
        temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        with open(temp, "w") as fh:
            fh.write(manifest.to_json())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, path)
        fsync_dir(self.folder)

    # -- writing ----------------------------------------------------------------------------------
    def update(
        self, storage: Storage | ObjectStorage, partition: str, params: IndexParams | None = None
    ) -> SegmentManifest:
        """(Re)build the partition's segment from its stored vectors (``storage/<asset>/<partition>.parquet``,
        or the parts its manifest lists on an object-store root) and switch to it."""
        params = params or IndexParams()
        storage.require(self.collection.asset, partition)
        source = SourceFingerprint.of_table(storage, self.collection.asset, partition)
        segments = self.folder / SEGMENTS_DIR
        segments.mkdir(parents=True, exist_ok=True)
        with self._locked(partition):
            token = uuid.uuid4().hex
            temp = segments / f".tmp-{partition}-{token}"
            try:
                manifest = build_segment(
                    temp, source, self.collection.column, self.collection.name, partition, params
                )
                final = segments / f"{partition}-{token}"
                os.rename(temp, final)
                fsync_dir(segments)
            except BaseException:
                shutil.rmtree(temp, ignore_errors=True)
                raise
            manifest.segment = final.name
            self._publish(manifest)
            for old in self._segment_dirs(partition):
                if old != final:
                    shutil.rmtree(old, ignore_errors=True)
        self._open.pop(partition, None)
        return manifest

    def remove(self, partition: str) -> bool:
        """Forget a partition: its manifest first (searches stop seeing it), then its segments."""
        with self._locked(partition):
            path = self.manifest_path(partition)
            existed = path.exists()
            path.unlink(missing_ok=True)
            if existed:
                fsync_dir(self.folder)
            for old in self._segment_dirs(partition):
                shutil.rmtree(old, ignore_errors=True)
        self._open.pop(partition, None)
        return existed

    def sync(self, storage: Storage | ObjectStorage, params: IndexParams | None = None) -> dict[str, str]:
        """Bring the index in line with storage: build missing or stale partitions, drop vanished ones."""
        actions: dict[str, str] = {}
        present = set(storage.partitions(self.collection.asset))
        for partition in sorted(present):
            manifest = self.manifest(partition)
            if manifest is None or not manifest.fingerprint.matches_table(
                storage, self.collection.asset, partition
            ):
                self.update(storage, partition, params)
                actions[partition] = "built" if manifest is None else "rebuilt"
        for partition in self.partitions():
            if partition not in present:
                self.remove(partition)
                actions[partition] = "removed"
        return actions

    # -- reading ----------------------------------------------------------------------------------
    def open(self, partition: str) -> Segment:
        """The partition's current segment (reopened when the manifest has moved on)."""
        for attempt in range(3):
            manifest = self.manifest(partition)
            if manifest is None:
                raise FileNotFoundError(
                    f"partition '{partition}' is not in the {self.collection.name} vector index"
                )
            cached = self._open.get(partition)
            if cached is not None and cached.manifest.segment == manifest.segment:
                return cached
            try:
                segment = Segment(
                    self.folder / SEGMENTS_DIR / manifest.segment, manifest, self.collection.column
                )
            except FileNotFoundError:
                if attempt == 2:
                    raise
                time.sleep(0.05)  # replaced between reading the manifest and opening: read it again
                continue
            self._open[partition] = segment
            return segment
        raise AssertionError("unreachable")

    def segments(self, partitions: list[str] | None = None) -> list[Segment]:
        names = self.partitions() if partitions is None else sorted(partitions)
        return [self.open(p) for p in names]

    def model(self, partitions: list[str] | None = None) -> tuple[str, int]:
        """The one (model, dim) of the segments; refuses a mix."""
        seen: dict[tuple[str, int], list[str]] = {}
        for p in self.partitions() if partitions is None else partitions:
            m = self.manifest(p)
            if m is None:
                raise FileNotFoundError(f"partition '{p}' is not in the {self.collection.name} vector index")
            seen.setdefault((m.model, m.dim), []).append(p)
        if not seen:
            raise FileNotFoundError(
                f"the {self.collection.name} vector index at {self.folder} is empty: materialize "
                f"vector_index (or call VectorIndex.sync) after {self.collection.asset}"
            )
        if len(seen) > 1:
            detail = "; ".join(f"{m} (dim {d}): {ps}" for (m, d), ps in sorted(seen.items()))
            raise ModelMismatch(
                f"the {self.collection.name} index holds vectors of several models, which cannot be "
                f"compared: {detail}. Re-materialize {self.collection.asset} for the odd partitions "
                "with one model, or search some partitions only"
            )
        return next(iter(seen))

    def status(self, storage: Storage | ObjectStorage | None = None) -> pd.DataFrame:
        """One row per partition: indexed rows, model, and whether the segment matches its source file."""
        rows = []
        names = set(self.partitions())
        if storage is not None:
            names |= set(storage.partitions(self.collection.asset))
        for p in sorted(names):
            m = self.manifest(p)
            state = "missing" if m is None else ("fresh" if m.fingerprint.is_current() else "stale")
            rows.append(
                {
                    "partition": p,
                    "state": state,
                    "rows": m.rows if m else 0,
                    "model": m.model if m else None,
                    "dim": m.dim if m else None,
                    "dtype": m.params["dtype"] if m else None,
                    "build_seconds": m.build_seconds if m else None,
                    "segment": m.segment if m else None,
                }
            )
        return pd.DataFrame(
            rows, columns=["partition", "state", "rows", "model", "dim", "dtype", "build_seconds", "segment"]
        )

    def search(
        self,
        queries: np.ndarray,
        k: int = 10,
        *,
        model: str | None = None,
        exact: bool = False,
        partitions: list[str] | None = None,
        expansion: int | None = None,
        threads: int = 1,
        allow_stale: bool = False,
    ) -> pd.DataFrame:
        """Top-k over the segments: columns query, rank (1 = best), partition, id, row, score (cosine).

        ``model`` (the name in the embeddings' provenance) is checked against every segment searched.
        Approximate search refuses stale segments unless ``allow_stale``; exact search always does.
        """
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        index_model, dim = self.model(partitions)
        if model is not None and model != index_model:
            raise ModelMismatch(
                f"the query vectors come from {model!r} but the {self.collection.name} index was built from "
                f"{index_model!r} embeddings: embed the query with {index_model!r}"
            )
        if queries.shape[1] != dim:
            raise ModelMismatch(f"query vectors have dimension {queries.shape[1]}, the index {dim}")
        segs = self.segments(partitions)
        if not exact and not allow_stale:
            stale = [s.partition for s in segs if not s.is_fresh()]
            if stale:
                raise StaleSegment(
                    f"the {self.collection.name} vector index is stale for {stale} (their "
                    f"{self.collection.asset} files changed): update those partitions, or pass allow_stale"
                )
        all_rows, all_scores, all_seg = [], [], []
        for j, seg in enumerate(segs):
            rows, scores = (
                seg.exact_search(queries, k) if exact else seg.search(queries, k, expansion, threads)
            )
            all_rows.append(rows)
            all_scores.append(scores)
            all_seg.append(np.full(rows.shape, j, dtype=np.int64))
        if not segs:
            return pd.DataFrame(columns=["query", "rank", "partition", "id", "row", "score"])
        rows = np.concatenate(all_rows, axis=1)
        scores = np.concatenate(all_scores, axis=1)
        seg_of = np.concatenate(all_seg, axis=1)
        order = np.lexsort((rows, seg_of, -scores), axis=1)[:, :k]
        rows, scores, seg_of = (np.take_along_axis(a, order, 1) for a in (rows, scores, seg_of))
        out = []
        for j, seg in enumerate(segs):
            mask = (seg_of == j) & (rows >= 0)
            if not mask.any():
                continue
            qi, ri = np.nonzero(mask)
            ids = seg.id_of(rows[qi, ri])
            out.append(
                pd.DataFrame(
                    {
                        "query": qi,
                        "rank": ri + 1,
                        "partition": seg.partition,
                        "id": ids,
                        "row": rows[qi, ri],
                        "score": scores[qi, ri],
                    }
                )
            )
        if not out:
            return pd.DataFrame(columns=["query", "rank", "partition", "id", "row", "score"])
        frame = pd.concat(out, ignore_index=True).sort_values(["query", "rank"], kind="stable")
        return frame.reset_index(drop=True)

    # -- checks -----------------------------------------------------------------------------------
    def disk_bytes(self, partition: str) -> int:
        manifest = self.manifest(partition)
        if manifest is None:
            return 0
        folder = self.folder / SEGMENTS_DIR / manifest.segment
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())

    def self_recall(self, partition: str, sample: int = 256, seed: int = 0) -> float:
        """Share of sampled stored vectors whose nearest neighbour through the graph is themselves (or
        an exact copy): the asset check that the graph answers what it holds (1.0 when healthy)."""
        segment = self.open(partition)
        if segment.rows == 0:
            return 1.0
        rng = np.random.default_rng(seed)
        rows = np.sort(rng.choice(segment.rows, size=min(sample, segment.rows), replace=False))
        vectors = np.empty((len(rows), segment.manifest.dim), dtype=np.float32)
        for start, block in segment.iter_vectors(65_536):
            inside = (rows >= start) & (rows < start + len(block))
            vectors[inside] = block[rows[inside] - start]
        found, scores = segment.search(vectors, 1)
        own = np.einsum("ij,ij->i", vectors, vectors)
        return float(np.mean((found[:, 0] == rows) | (scores[:, 0] >= own - 1e-4)))


def index_report(
    layout: Layout,
    storage: Storage | ObjectStorage,
    collections: tuple[str, ...],
    partition: str,
    params: IndexParams,
) -> tuple[dict, list[CheckOutcome]]:
    """Update the partition's segment in each collection; what the index assets show, and the
    self-recall check (stored vectors must find themselves through the graph)."""
    meta: dict = {"vectors": 0}
    checks: list[CheckOutcome] = []
    worst = 1.0
    for name in collections:
        index = VectorIndex.at(layout, name)
        manifest = index.update(storage, partition, params)
        recall = index.self_recall(partition)
        worst = min(worst, recall)
        meta["vectors"] = max(meta["vectors"], manifest.rows)
        meta[f"{name}_segment"] = FilePath.of(index.folder / SEGMENTS_DIR / manifest.segment)
        meta[f"{name}_build_seconds"] = round(manifest.build_seconds, 3)
        meta[f"{name}_disk_bytes"] = index.disk_bytes(partition)
        meta[f"{name}_self_recall"] = round(recall, 4)
        meta[f"{name}_partitions_in_index"] = len(index.partitions())
        meta["model"], meta["dimension"] = manifest.model, manifest.dim
    meta["parameters"] = Json(params.model_dump())
    checks.append(CheckOutcome("self_recall", worst >= 0.99, {"self_recall": worst}))
    return meta, checks
