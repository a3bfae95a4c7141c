"""Rows of stage files by (source, id), kept warm for a process that answers many queries.

Following a search hit through the stages means finding its row in each stage's output (and
rejected) file. Scanning every file with DuckDB on each query cost ~100 ms of CPU per query even
on a small home (benchmarks/RESULTS.md, "Search latency"), most of it opening and planning the
scans. A :class:`StageLookup` keeps, per file, a hash map from ``id`` to row numbers and the
file's Parquet footer; a query then decodes only the row groups that hold its hits (kept in a
least-recently-used cache up to a byte budget) and takes those rows. A file replaced on disk
(another materialization: a new inode, size or mtime) is re-indexed on its next use, so answers
never come from a stale file.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.storage import Storage

DEFAULT_BUDGET_BYTES = 256 * 1024 * 1024  # decoded row groups kept between queries
SKIPPED_COLUMNS = ("image", "video_bytes")  # media payloads: never part of a hit's description


def _stamp(filesystem: pafs.FileSystem, path: str) -> tuple[int, int, int]:
    """A file's identity: inode, size and mtime on a local disk; size and mtime on an object store
    (where a committed part is never rewritten: a new run writes parts of new names)."""
    if filesystem.type_name == "local":
        st = os.stat(path)
        return st.st_ino, st.st_size, st.st_mtime_ns
    info = filesystem.get_file_info(path)
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(path)
    return 0, int(info.size or 0), int(info.mtime_ns or 0)


def _shown(field: pa.Field) -> bool:
    """Columns a hit carries: not binary (what DuckDB reads as BLOB), not a media payload."""
    binary = pa.types.is_binary(field.type) or pa.types.is_large_binary(field.type)
    return not binary and not pa.types.is_fixed_size_binary(field.type) and field.name not in SKIPPED_COLUMNS


@dataclass
class _FileIndex:
    stamp: tuple[int, int, int]
    metadata: pq.FileMetaData
    rows_of: dict[str, list[int]]  # id -> row numbers in the file
    group_starts: np.ndarray  # first row of each row group
    columns: list[str]


class StageLookup:
    """``lookup.rows(storage, asset, hits, rejected)``: the rows of ``asset``'s files (or its
    rejected files) whose (source, id) is among the hits', binary columns dropped, as one frame
    (columns of several files united by name; ``source`` and ``id`` always present). One lookup
    may serve several threads (a server's tool calls): each call holds its lock."""

    def __init__(self, budget_bytes: int = DEFAULT_BUDGET_BYTES):
        self.budget_bytes = budget_bytes
        self._files: dict[str, _FileIndex] = {}
        self._groups: OrderedDict[tuple, pa.Table] = OrderedDict()
        self._held = 0
        self._lock = threading.Lock()

    def _index(self, filesystem: pafs.FileSystem, path: str) -> _FileIndex:
        key, stamp = path, _stamp(filesystem, path)
        found = self._files.get(key)
        if found is not None and found.stamp == stamp:
            return found
        with filesystem.open_input_file(path) as handle:
            parquet = pq.ParquetFile(handle)
            ids = parquet.read(columns=["id"]).column("id").to_pylist()
        rows_of: dict[str, list[int]] = {}
        for row, doc in enumerate(ids):
            rows_of.setdefault(doc, []).append(row)
        meta = parquet.metadata
        sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
        starts = np.zeros(len(sizes), dtype=np.int64)
        np.cumsum(sizes[:-1], out=starts[1:])
        columns = [f.name for f in parquet.schema_arrow if _shown(f)]
        found = _FileIndex(stamp, meta, rows_of, starts, columns)
        self._files[key] = found
        return found

    def _group(self, filesystem: pafs.FileSystem, path: str, index: _FileIndex, group: int) -> pa.Table:
        key = (path, index.stamp, group)
        table = self._groups.get(key)
        if table is not None:
            self._groups.move_to_end(key)
            return table
        with filesystem.open_input_file(path) as handle:
            table = pq.ParquetFile(handle, metadata=index.metadata).read_row_group(
                group, columns=index.columns
            )
        self._groups[key] = table
        self._held += table.nbytes
        while self._held > self.budget_bytes and len(self._groups) > 1:
            _, dropped = self._groups.popitem(last=False)
            self._held -= dropped.nbytes
        return table

    def _file_rows(
        self, filesystem: pafs.FileSystem, path: str, ids: list[str], source: str
    ) -> pd.DataFrame | None:
        index = self._index(filesystem, path)
        rows = sorted({r for doc in ids for r in index.rows_of.get(doc, ())})
        if not rows:
            return None
        rows_arr = np.asarray(rows, dtype=np.int64)
        groups = np.searchsorted(index.group_starts, rows_arr, side="right") - 1
        parts = []
        for group in np.unique(groups).tolist():
            local = rows_arr[groups == group] - index.group_starts[group]
            parts.append(self._group(filesystem, path, index, group).take(pa.array(local)))
        frame = pa.concat_tables(parts).to_pandas()
        return frame[frame["source"] == source] if "source" in frame.columns else None

    def rows(self, storage: Storage, asset: str, hits: pd.DataFrame, rejected: bool) -> pd.DataFrame:
        with self._lock:
            return self._rows(storage, asset, hits, rejected)

    def _rows(self, storage: Storage, asset: str, hits: pd.DataFrame, rejected: bool) -> pd.DataFrame:
        frames = []
        for source, ids in hits.groupby("source", sort=True)["id"]:
            wanted = list(dict.fromkeys(ids.tolist()))
            for path in storage.files(asset, source, rejected):
                found = self._file_rows(storage.fs, str(path), wanted, source)
                if found is not None and len(found):
                    frames.append(found)
        if not frames:
            return pd.DataFrame(columns=["source", "id"])
        return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0].reset_index(drop=True)

    def clear(self) -> None:
        with self._lock:
            self._files.clear()
            self._groups.clear()
            self._held = 0
