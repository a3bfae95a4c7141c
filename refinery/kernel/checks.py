"""The invariant checks every stage runs on what it wrote.

Computed from the files, not from the stage's own counters, so a bug in a processor or in the
writer cannot hide itself: ids are unique, no kept row has empty text, and every input row is
either kept or rejected with a reason.
"""

from __future__ import annotations

import pyarrow.compute as pc

from refinery.kernel.runner import StageRun
from refinery.metadata import CheckOutcome
from refinery.storage import count_rows, iter_path_batches, read_path

INVARIANT_CHECKS = ("unique_ids", "non_empty_text", "rows_accounted")


def invariant_descriptions(text_column: str = "text") -> dict[str, str]:
    return {
        "unique_ids": "Every id appears once in the output.",
        "non_empty_text": f"No output row has an empty or whitespace-only '{text_column}'.",
        "rows_accounted": "Input rows = output rows + rejected rows (read back from the files), less the "
        "input rows routed to another stage (the language routing).",
    }


def invariant_checks(run: StageRun, rows_in: int, text_column: str = "text") -> list[CheckOutcome]:
    path = run.path
    ids = read_path(path, columns=["id"]).column("id")
    distinct = pc.count_distinct(ids).as_py() if len(ids) else 0
    empty = 0
    for batch in iter_path_batches(path, 20_000, [text_column]):
        column = batch.column(0)
        trimmed = pc.utf8_trim_whitespace(column)
        empty += int(pc.sum(pc.equal(pc.utf8_length(trimmed), 0)).as_py() or 0) + column.null_count
    out = count_rows(path)
    rejected = count_rows(run.rejected_path)
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
