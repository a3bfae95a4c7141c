"""The ingest stage: one inbox source folder to its raw asset plus its quarantine."""

from __future__ import annotations

import time
from collections.abc import Callable

import pandas as pd

from refinery.kernel.collector import IngestBatch, RowCollector
from refinery.kernel.runner import StageRun
from refinery.stats import StageStats
from refinery.storage import Storage


def ingest_with_reader(
    reader: RowCollector,
    storage: Storage,
    asset: str,
    provenance: dict,
    on_batch: Callable[[pd.DataFrame], None] | None = None,
) -> StageRun:
    """Stream a reader's batches into the asset's output and quarantine files, with statistics.

    Shared by every inbox kind: the reader names its schemas and text column. ``on_batch`` sees
    each batch of admitted rows (for kind-specific counts such as SFT formats).
    """
    schema, quarantine_schema, text_column = reader.SCHEMA, reader.QUARANTINE_SCHEMA, reader.TEXT_COLUMN
    started = time.perf_counter()
    stats = StageStats(text_column=text_column)
    reader.arrow_blocks = on_batch is None  # on_batch sees frames: its readers build rows as dicts
    with storage.writer(asset, reader.source, schema, quarantine_schema, provenance) as writer:
        for batch in reader.batches():
            if batch.table is not None:  # documents admitted as one Arrow block, before the rows below
                writer.write_table(batch.table)
                stats.rows_out += batch.table.num_rows
                stats.observe_output_table(batch.table)
            rows = pd.DataFrame(batch.documents, columns=schema.names)
            quarantine = pd.DataFrame(batch.quarantine, columns=quarantine_schema.names)
            writer.write(rows, quarantine)
            stats.rows_out += len(rows)
            stats.rows_rejected += len(quarantine)
            stats.observe_output(rows)
            if on_batch is not None:
                on_batch(rows)
            kept = rows
            if batch.table is not None and len(stats.sample_kept) < 5:
                kept = batch_head(batch, schema.names, text_column, 5 - len(stats.sample_kept))
            for sample, frame in ((stats.sample_kept, kept), (stats.sample_rejected, quarantine)):
                if len(sample) < 5 and len(frame):
                    sample.extend(frame.head(5 - len(sample)).to_dict("records"))
    stats.rows_in = stats.rows_out + stats.rows_rejected
    stats.chars_in = stats.chars_out
    stats.reasons.update(reader.stats.reasons)
    stats.extra = {
        "folder_exists": reader.folder.is_dir(),
        "files": dict(reader.stats.files),
        "blank_lines": reader.stats.blank_lines,
        "input_bytes": reader.stats.input_bytes,
    }
    return StageRun(
        asset, reader.source, writer.path, writer.rejected_path, time.perf_counter() - started, stats, schema
    )


def batch_head(batch: IngestBatch, names: list[str], text_column: str, n: int) -> pd.DataFrame:
    """The first ``n`` kept rows of a batch with an Arrow block (its rows, then the dicts'), as the
    frame of all its rows built from dicts gives them (each column's dtype is inferred from the
    whole batch: a missing string is NaN in a column that holds strings), converting only ``n``
    texts: the samples shown read the same whichever way the rows were admitted."""
    table = batch.table
    others = [c for c in names if c != text_column]
    records = table.select(others).to_pylist() + [{c: d.get(c) for c in others} for d in batch.documents]
    head = pd.DataFrame(records, columns=others).head(n)
    texts = table.column(text_column).slice(0, n).to_pylist()
    texts += [d.get(text_column) for d in batch.documents[: max(0, n - len(texts))]]
    head.insert(0, text_column, pd.Series(texts, index=head.index, dtype="str" if texts else None))
    return head[names]
