"""A partition cut into slices for workers, and one slice processed into its two part files.

A slice is a run of consecutive row groups of one upstream file, so slices in order are the
partition's rows in order. A worker processes its slice in batches with the stage's processor and
writes the kept and the rejected rows as ``part-<slice>.parquet`` of each output; the parts, in
slice order, are exactly the rows (and reasons) one process streaming the partition would write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.kernel.processor import Processor, routed_input
from refinery.stats import Histogram, StageStats
from refinery.storage import PartsWriter, parquet_files, table_from_frame


@dataclass(frozen=True)
class Slice:
    index: int
    file: str
    row_groups: tuple[int, ...]
    rows: int


def plan_slices(location: Path, slice_rows: int) -> list[Slice]:
    """Consecutive row groups of each upstream file, about ``slice_rows`` rows per slice (a row
    group is never split, so a slice may be larger); at least one slice, even when empty."""
    slices: list[Slice] = []
    for file in parquet_files(location):
        metadata = pq.ParquetFile(file).metadata
        groups: list[int] = []
        rows = 0
        for g in range(metadata.num_row_groups):
            groups.append(g)
            rows += metadata.row_group(g).num_rows
            if rows >= slice_rows:
                slices.append(Slice(len(slices), str(file), tuple(groups), rows))
                groups, rows = [], 0
        if groups:
            slices.append(Slice(len(slices), str(file), tuple(groups), rows))
    if not slices:
        slices.append(Slice(0, str(parquet_files(location)[0]), (), 0))
    return slices


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
    if piece.row_groups:
        parquet = pq.ParquetFile(piece.file)
        for batch in parquet.iter_batches(batch_size=batch_rows, row_groups=list(piece.row_groups)):
            frame, routed = routed_input(process, batch.to_pandas())
            stats.rows_routed += routed
            result = process(frame)
            stats.observe(frame, result)
            kept.append(table_from_frame(result.kept, schema))
            rejected.append(table_from_frame(result.rejected, rejected_schema))
    writer.write_part(piece.index, _concat(kept, schema), rejected=False)
    writer.write_part(piece.index, _concat(rejected, rejected_schema), rejected=True)
    return stats


def _concat(tables: list[pa.Table], schema: pa.Schema) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return (
        pa.concat_tables(tables).replace_schema_metadata(schema.metadata) if tables else schema.empty_table()
    )
