"""The invariant checks every stage runs on what it wrote.

Computed from the files, not from the stage's own counters, so a bug in a processor or in the
writer cannot hide itself: ids are unique, no kept row has empty text, and every input row is
either kept or rejected with a reason.
"""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc
import pyarrow.fs as pafs

from refinery.fs import iter_parquet_batches, parquet_rows, read_parquet_files
from refinery.kernel.runner import StageRun
from refinery.metadata import CheckOutcome
from refinery.storage import parquet_files

INVARIANT_CHECKS = ("unique_ids", "non_empty_text", "rows_accounted")


def invariant_descriptions(text_column: str = "text") -> dict[str, str]:
    return {
        "unique_ids": "Every id appears once in the output.",
        "non_empty_text": f"No output row has an empty or whitespace-only '{text_column}'.",
        "rows_accounted": "Input rows = output rows + rejected rows (read back from the files), less the "
        "input rows routed to another stage (the language routing).",
    }


def invariant_checks(
    run: StageRun, rows_in: int, text_column: str = "text", storage: Any = None
) -> list[CheckOutcome]:
    """The checks over what ``run`` wrote, read through ``storage``'s filesystem (any root: a local
    folder, an object store); without ``storage``, the local files at ``run.path``."""
    if storage is None:
        fs, files, rejected_files = (
            pafs.LocalFileSystem(),
            parquet_files(run.path),
            parquet_files(run.rejected_path),
        )
    else:
        fs = storage.fs
        files = storage.files(run.asset, run.partition)
        rejected_files = storage.files(run.asset, run.partition, rejected=True)
    ids = read_parquet_files(fs, files, columns=["id"]).column("id")
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    empty = 0
    for batch in iter_parquet_batches(fs, files, 20_000, [text_column]):
        column = batch.column(0)
        # Empty, or whitespace only: what trimming to nothing finds, without a trimmed copy of the
        # column (utf8_is_space stops at a text's first other character; same whitespace as the trim).
        blank = pc.or_(pc.equal(pc.binary_length(column), 0), pc.utf8_is_space(column))
        empty += int(pc.sum(blank).as_py() or 0) + column.null_count
    out = parquet_rows(fs, files)
    rejected = parquet_rows(fs, rejected_files)
    return [
        CheckOutcome("unique_ids", distinct == len(ids), {"rows": len(ids), "distinct_ids": distinct}),
        CheckOutcome("non_empty_text", empty == 0, {"empty_rows": empty}),
        CheckOutcome(
            "rows_accounted",
            rows_in == out + rejected,
            {
                "rows_in": rows_in,
                "rows_out": out,
                "rows_rejected": rejected,
                "rows_routed": run.stats.rows_routed,
            },
        ),
    ]
