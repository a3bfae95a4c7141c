"""MinHash signatures written by an engine's workers as parts, streamed back part by part.

``fuzzy_deduplicated`` on a distributed engine signs its partition on the workers (the expensive
half: shingling and hashing every document) and claims in the step, in reading order (the claims
must be in first-come order against one index). The workers write each slice's signatures as
``part-<slice>.parquet`` (one fixed-size list of ``num_perm`` uint32 per row, rows in order) with
:meth:`refinery.kernel.spec.Engine.map_to_parts`; the claimer reads them back one part at a time
(:class:`SignatureParts`), so the step holds one slice's signatures (20,000 rows × 128 × 4 bytes
= 10 MB at the defaults), never the partition's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from refinery.dedup.fuzzy import signature_function
from refinery.engine.root_folder import RootFolder
from refinery.storage import PartsWriter

SIGNATURE_COLUMN = "signature"


def signature_table_function(index_params: dict) -> Callable[[pd.DataFrame], pa.Table]:
    """What a worker runs per batch: the index's MinHash signatures as one list column."""
    sign = signature_function(index_params)
    num_perm = int(index_params["num_perm"])

    def table(frame: pd.DataFrame) -> pa.Table:
        signatures = np.ascontiguousarray(sign(frame), dtype=np.uint32).reshape(-1, num_perm)
        values = pa.array(signatures.ravel(), type=pa.uint32())
        return pa.table({SIGNATURE_COLUMN: pa.FixedSizeListArray.from_arrays(values, num_perm)})

    return table


def signatures_of(table: pa.Table, num_perm: int) -> np.ndarray:
    """A part's signature column (read from any filesystem) as ``(rows, num_perm)`` uint32."""
    column = table.column(SIGNATURE_COLUMN).combine_chunks()
    return column.values.to_numpy(zero_copy_only=False).astype(np.uint32).reshape(-1, num_perm)


class SignatureParts:
    """The partition's signatures in row order, read a part at a time as the claimer takes them.

    ``flags``, when given, names a boolean column written beside the signatures (e.g. which rows
    passed the rules ahead of the claims): :meth:`take_flagged` hands it out with them. ``folder``
    is a local path or a URI on the storage root's object store (the workers wrote the parts there).
    """

    def __init__(
        self,
        folder: Path | str | RootFolder,
        parts: Sequence[int],
        num_perm: int,
        rows: int,
        flags: str | None = None,
    ):
        self.folder, self.num_perm, self.rows, self.flags = RootFolder.of(folder), num_perm, rows, flags
        self._queue = list(parts)
        self._buffer = np.zeros((0, num_perm), dtype=np.uint32)
        self._flag_buffer = np.zeros(0, dtype=bool)
        self.taken = 0
        self.peak_rows_held = 0

    def _read_next(self, n: int) -> None:
        if not self._queue:
            raise ValueError(
                f"{n} more signatures asked for after all {self.taken} of the parts: the "
                "partition changed after it was signed"
            )
        columns = [SIGNATURE_COLUMN] if self.flags is None else [SIGNATURE_COLUMN, self.flags]
        table = self.folder.read_table(PartsWriter.part_name(self._queue.pop(0)), columns)
        self._buffer = signatures_of(table, self.num_perm)
        if self.flags is not None:
            self._flag_buffer = table.column(self.flags).to_numpy().astype(bool)
        self.peak_rows_held = max(self.peak_rows_held, len(self._buffer))

    def take_flagged(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The next ``n`` rows' flags and signatures (reading the next parts as needed)."""
        pieces, flags = [], []
        while n > 0:
            if not len(self._buffer):
                self._read_next(n)
                continue
            piece, self._buffer = self._buffer[:n], self._buffer[n:]
            flag, self._flag_buffer = self._flag_buffer[:n], self._flag_buffer[n:]
            pieces.append(piece)
            flags.append(flag)
            n -= len(piece)
            self.taken += len(piece)
        if not pieces:
            return np.zeros(0, dtype=bool), np.zeros((0, self.num_perm), dtype=np.uint32)
        if len(pieces) == 1:
            return flags[0], pieces[0]
        return np.concatenate(flags), np.concatenate(pieces)

    def take(self, n: int) -> np.ndarray:
        """The next ``n`` rows' signatures (reading the next parts as needed)."""
        return self.take_flagged(n)[1]
