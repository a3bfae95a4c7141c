"""The ingest stage: one inbox source folder to ``raw_documents`` plus its quarantine."""

from __future__ import annotations

import time

import pandas as pd

from refinery.batch import StageStats
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.paths import Layout
from refinery.schema import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA
from refinery.stage import StageRun
from refinery.storage import Storage


def ingest_source(
    layout: Layout, storage: Storage, asset: str, source: str, params: IngestParams, provenance: dict
) -> StageRun:
    started = time.perf_counter()
    folder = layout.inbox_source("text", source)
    reader = SourceReader(folder, source, params)
    stats = StageStats()
    with storage.writer(asset, source, DOCUMENT_SCHEMA, QUARANTINE_SCHEMA, provenance) as writer:
        for batch in reader.batches():
            docs = pd.DataFrame(batch.documents, columns=DOCUMENT_SCHEMA.names)
            quarantine = pd.DataFrame(batch.quarantine, columns=QUARANTINE_SCHEMA.names)
            writer.write(docs, quarantine)
            stats.rows_out += len(docs)
            stats.rows_rejected += len(quarantine)
            stats.observe_output(docs)
            for sample, frame in ((stats.sample_kept, docs), (stats.sample_rejected, quarantine)):
                if len(sample) < 5 and len(frame):
                    sample.extend(frame.head(5 - len(sample)).to_dict("records"))
    stats.rows_in = stats.rows_out + stats.rows_rejected
    stats.chars_in = stats.chars_out
    stats.reasons.update(reader.stats.reasons)
    stats.extra = {
        "folder_exists": folder.is_dir(),
        "files": dict(reader.stats.files),
        "blank_lines": reader.stats.blank_lines,
        "input_bytes": reader.stats.input_bytes,
    }
    return StageRun(
        asset,
        source,
        writer.path,
        writer.rejected_path,
        time.perf_counter() - started,
        stats,
        DOCUMENT_SCHEMA,
    )
