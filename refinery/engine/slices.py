"""A partition cut into slices for workers, and one slice processed into its two part files.

A slice is a run of consecutive row groups of one upstream file, so slices in order are the
partition's rows in order. A worker processes its slice in batches with the stage's processor and
writes the kept and the rejected rows as ``part-<slice>.parquet`` of each output; the parts, in
slice order, are exactly the rows (and reasons) one process streaming the partition would write.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.resume import read_marker, write_marker
from refinery.engine.root_folder import RootFolder, filesystem_of
from refinery.fs import is_local, join
from refinery.kernel.processor import Processor, routed_input
from refinery.manifest import read_manifest_at
from refinery.stats import Histogram, StageStats
from refinery.storage import PartsWriter, parquet_files, table_from_frame


@dataclass(frozen=True)
class Slice:
    index: int
    file: str  # a local path, or a path on the filesystem of ``fs_uri``
    row_groups: tuple[int, ...]
    rows: int
    fs_uri: str = ""  # the partition's URI on an object store root ("" for a local file)

    def parquet(self) -> pq.ParquetFile:
        """The slice's file, opened through its filesystem (a worker opens it from the URI)."""
        if not self.fs_uri:
            return pq.ParquetFile(self.file)
        filesystem, _ = filesystem_of(self.fs_uri)
        return pq.ParquetFile(filesystem.open_input_file(self.file))


_CURRENT: ContextVar[Slice | None] = ContextVar("refinery_slice", default=None)


def current_slice() -> Slice | None:
    """The slice this worker is processing (None outside a slice): a processor whose first pass
    was written per slice (perplexity's scores) reads that slice's part."""
    return _CURRENT.get()


@contextmanager
def processing(piece: Slice) -> Iterator[Slice]:
    token = _CURRENT.set(piece)
    try:
        yield piece
    finally:
        _CURRENT.reset(token)


def slice_location(storage: Any, asset: str, partition: str) -> Path | str:
    """Where a partition's slices are read from: its local file or folder, or, on an object store
    root, its folder's URI with the root's options (what a worker opens the filesystem from)."""
    found = storage.require(asset, partition)
    if hasattr(storage, "location_uri"):  # refinery.object_storage.ObjectStorage
        return storage.location_uri(asset, partition)
    return found


def _partition_files(location: Path | str) -> tuple[list[str], str]:
    """(the partition's files in row order, the URI to open them through: "" when local)."""
    if isinstance(location, str) and not is_local(location):
        filesystem, folder = filesystem_of(location)
        manifest = read_manifest_at(filesystem, folder)
        if not manifest:
            raise FileNotFoundError(f"no committed output at {location.partition('?')[0]}")
        return [join(folder, p["name"]) for p in manifest["parts"]], location
    return [str(f) for f in parquet_files(Path(location))], ""


def partition_files(location: Path | str) -> tuple[list[str], str]:
    """(the partition's files in row order, the URI a worker opens them through: "" when local) of
    a local file or folder, or a partition's URI on an object store root (its manifest's parts)."""
    return _partition_files(location)


def plan_slices(location: Path | str, slice_rows: int) -> list[Slice]:
    """Consecutive row groups of each upstream file, about ``slice_rows`` rows per slice (a row
    group is never split, so a slice may be larger); at least one slice, even when empty.
    ``location`` is a local file or folder, or a partition's URI on an object store root (its
    manifest's parts, read through the URI's filesystem: :func:`slice_location`)."""
    slices: list[Slice] = []
    files, fs_uri = _partition_files(location)
    for file in files:
        metadata = Slice(0, file, (), 0, fs_uri).parquet().metadata
        groups: list[int] = []
        rows = 0
        for g in range(metadata.num_row_groups):
            groups.append(g)
            rows += metadata.row_group(g).num_rows
            if rows >= slice_rows:
                slices.append(Slice(len(slices), str(file), tuple(groups), rows, fs_uri))
                groups, rows = [], 0
        if groups:
            slices.append(Slice(len(slices), str(file), tuple(groups), rows, fs_uri))
    if not slices:
        slices.append(Slice(0, files[0], (), 0, fs_uri))
    return slices


def slice_start(location: Path | str, piece: Slice) -> int:
    """The partition row at which ``piece`` starts, from the files' metadata alone: a worker that
    holds only its slice finds its rows in a file written in partition order (a plan's decisions).
    ``location`` as :func:`plan_slices`'s (a local path, or a partition's URI)."""
    start = 0
    files, fs_uri = _partition_files(location)
    for file in files:
        metadata = Slice(0, file, (), 0, fs_uri).parquet().metadata
        if str(file) == piece.file:
            first = piece.row_groups[0] if piece.row_groups else metadata.num_row_groups
            return start + sum(metadata.row_group(g).num_rows for g in range(first))
        start += metadata.num_rows
    raise ValueError(f"slice {piece.index} names {piece.file}, which is not a file of {location}")


def process_slice(
    piece: Slice,
    process: Processor,
    writer: PartsWriter,
    schema: pa.Schema,
    rejected_schema: pa.Schema,
    histograms: dict[str, tuple[float, ...]],
    text_column: str,
    batch_rows: int,
) -> StageStats:
    """Stream one slice through the processor into its two parts; returns the slice's stats."""
    stats = StageStats(histograms={n: Histogram(e) for n, e in histograms.items()}, text_column=text_column)
    kept, rejected = [], []
    with processing(piece):
        _process_batches(piece, process, stats, kept, rejected, schema, rejected_schema, batch_rows)
    writer.write_part(piece.index, _concat(kept, schema), rejected=False)
    writer.write_part(piece.index, _concat(rejected, rejected_schema), rejected=True)
    return stats


def _process_batches(
    piece: Slice,
    process: Processor,
    stats: StageStats,
    kept: list[pa.Table],
    rejected: list[pa.Table],
    schema: pa.Schema,
    rejected_schema: pa.Schema,
    batch_rows: int,
) -> None:
    if piece.row_groups:
        parquet = piece.parquet()
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=list(piece.row_groups)):
            frame, routed = routed_input(process, batch.to_pandas())
            stats.rows_routed += routed
            result = process(frame)
            stats.observe(frame, result)
            kept.append(table_from_frame(result.kept, schema))
            rejected.append(table_from_frame(result.rejected, rejected_schema))


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return (
        pa.concat_tables(tables).replace_schema_metadata(schema.metadata) if tables else schema.empty_table()
    )


# -- a column computed per slice and written as parts (a first pass: scores, signatures) ----------
ColumnFn = Callable[[pd.DataFrame], pd.DataFrame | pa.Table]
Summarize = Callable[[pa.Table], Any]


def column_part_path(folder: Path, index: int) -> Path:
    return folder / PartsWriter.part_name(index)


def slice_frames(piece: Slice, columns: list[str], batch_rows: int) -> Iterator[pd.DataFrame]:
    """The slice's rows in order, ``columns`` only, in batches (an empty slice gives no batch)."""
    if piece.row_groups:
        parquet = piece.parquet()
        for batch in parquet.iter_batches(batch_rows, row_groups=list(piece.row_groups), columns=columns):
            yield batch.to_pandas()


def write_column_part(
    piece: Slice,
    fn: ColumnFn,
    columns: list[str],
    folder: Path | str,
    batch_rows: int,
    summarize: Summarize | None = None,
) -> dict:
    """``fn`` over one slice's batches, written as ``folder/part-<slice>.parquet`` (rows in order),
    then the slice's done marker with ``summarize(table)``; returns the small dict the driver
    keeps (index, rows, summary, seconds). A slice whose marker is there is not computed again.
    ``folder`` is a local folder or a URI on the storage root's object store."""
    done = read_marker(folder, piece.index)
    if done is not None:
        return {**done, "reused": True}
    started = time.perf_counter()
    tables = [_as_table(fn(frame)) for frame in slice_frames(piece, columns, batch_rows)]
    if not tables:
        tables = [_as_table(fn(pd.DataFrame({c: pd.Series([], dtype=object) for c in columns})))]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if table.num_rows != piece.rows:
        raise RuntimeError(f"slice {piece.index}: {table.num_rows} rows computed for {piece.rows} read")
    target = RootFolder.of(folder).write_table(PartsWriter.part_name(piece.index), table)
    info = {
        "index": piece.index,
        "rows": table.num_rows,
        "summary": summarize(table) if summarize is not None else None,
        "seconds": time.perf_counter() - started,
    }
    write_marker(folder, piece.index, [target], info)
    return {**info, "reused": False}


def _as_table(result: pd.DataFrame | pa.Table) -> pa.Table:
    return result if isinstance(result, pa.Table) else pa.Table.from_pandas(result, preserve_index=False)
