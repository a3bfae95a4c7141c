"""A selection's decisions read back where the rows are written: a slice's, or the partition's in
order, never all of them at once.

The selection plan's ``collect`` step (:func:`refinery.sft.selection_plan.collect_task`) writes
one decisions file per piece, the pieces being the slices the stage's rows are written in, each
file in reading-position order. So:

- a worker writing slice ``i`` (the engine's :func:`~refinery.engine.slices.current_slice`) reads
  piece ``i``'s file, a batch at a time, beside the slice's rows;
- a process writing the whole partition (the local engine's step) reads the files one after the
  other, beside the partition's rows.

Either way each row's decision is the next one in the file, and its id is checked against the
row's: a plan that does not match the rows (a changed upstream, a slicing that differs) fails
with the row named, never decides a row by another's decision. Memory is one batch of
decisions; :attr:`PieceDecisions.read` counts the decisions read from the files (each record's
once, whatever the engine), which the stage reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import current_slice
from refinery.sft.selection_plan import decision_files

READ_BATCH = 8192  # decisions per read (the collect files' row group)
SCHEMA = [("id", pa.string()), ("cluster", pa.int32()), ("distance", pa.float32()), ("keep", pa.bool_())]
COLUMNS = [name for name, _ in SCHEMA]


class PieceDecisions:
    """Each row's (cluster, distance, keep), read in order from the plan's decision files.
    ``folder``: the plan folder (a local path, or a URI with the root's query)."""

    def __init__(self, folder: Path | str):
        self.folder = folder
        self.read = 0  # decisions read from the files by this object, over its life
        self._files: list[str] | None = None
        self._piece: Any = None  # the slice object being written (None: the whole partition)
        self._stream: Iterator[pa.RecordBatch] | None = None
        self._pending: pa.Table | None = None

    def files(self) -> list[str]:
        """The plan's decision files, one per piece in order: listed once per process (the step
        committed them before any row is written)."""
        if self._files is None:
            self._files = decision_files(self.folder)
        return self._files

    def _start(self, piece: Any) -> None:
        files = self.files()
        if piece is None:
            chosen = files
        elif piece.index < len(files):
            chosen = [files[piece.index]]
        else:
            raise RuntimeError(
                f"slice {piece.index}: the selection plan {self.folder} has decisions for "
                f"{len(files)} slices only (the stage was sliced differently): rerun the stage"
            )
        filesystem = RootFolder.of(self.folder).fs
        if piece is not None:
            rows = pq.ParquetFile(filesystem.open_input_file(chosen[0])).metadata.num_rows
            if rows != piece.rows:
                raise RuntimeError(
                    f"slice {piece.index}: {rows} decisions in the plan for its {piece.rows} records: "
                    "rerun the stage"
                )
        self._piece, self._pending = piece, None
        self._stream = _batches(filesystem, chosen)

    def take(self, ids: pd.Series) -> pd.DataFrame:
        """The decisions of the next ``len(ids)`` rows (``cluster``, ``distance``, ``keep``, on
        ``ids``' index), each checked to be that row's."""
        piece = current_slice()
        if self._stream is None or piece is not self._piece:  # a new slice task (or the first batch)
            self._start(piece)
        rows = len(ids)
        have = self._pending
        parts = [have] if have is not None and have.num_rows else []
        held = sum(t.num_rows for t in parts)
        while held < rows:
            batch = next(self._stream, None)
            if batch is None:
                break
            self.read += batch.num_rows
            parts.append(pa.Table.from_batches([batch]))
            held += batch.num_rows
        table = pa.concat_tables(parts) if parts else pa.schema(SCHEMA).empty_table()
        if table.num_rows < rows:
            where = "the partition" if piece is None else f"slice {piece.index}"
            raise RuntimeError(
                f"{where} has more records than the selection plan decided: the upstream changed "
                "during the run; materialize it again"
            )
        now, self._pending = table.slice(0, rows), table.slice(rows)
        got = np.asarray(now.column("id").to_pylist(), dtype=object)
        want = ids.astype(str).to_numpy(dtype=object)
        wrong = np.flatnonzero(got != want)
        if len(wrong):
            i = int(wrong[0])
            raise RuntimeError(
                f"the selection plan's decision for record {want[i]!r} is for {got[i]!r}: the upstream "
                "changed during the run; materialize it again"
            )
        return pd.DataFrame(
            {
                "cluster": now.column("cluster").to_numpy().astype(np.int64),
                "distance": now.column("distance").to_numpy().astype(np.float64),
                "keep": now.column("keep").to_numpy(zero_copy_only=False).astype(bool),
            },
            index=ids.index,
        )


def _batches(filesystem: Any, files: list[str]) -> Iterator[pa.RecordBatch]:
    """The decisions of ``files`` in order, :data:`READ_BATCH` at a time, one file open at a time."""
    for file in files:
        with filesystem.open_input_file(file) as handle:
            yield from pq.ParquetFile(handle).iter_batches(READ_BATCH, columns=COLUMNS)
