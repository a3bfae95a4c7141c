"""The SFT ingest stage: one ``inbox/sft/<source>/`` folder to ``raw_sft`` plus its quarantine."""

from __future__ import annotations

from collections import Counter

import pandas as pd

from refinery.ingest.stage import ingest_with_reader
from refinery.paths import Layout
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.stage import StageRun
from refinery.storage import Storage

INBOX_KIND = "sft"


def ingest_sft_source(
    layout: Layout, storage: Storage, asset: str, source: str, params: SftIngestParams, provenance: dict
) -> StageRun:
    reader = SftReader(layout.inbox_source(INBOX_KIND, source), source, params)
    kinds: Counter = Counter()
    formats: Counter = Counter()

    def count(rows: pd.DataFrame) -> None:
        kinds.update(rows["kind"].tolist())
        formats.update(rows["format"].tolist())

    run = ingest_with_reader(reader, storage, asset, provenance, on_batch=count)
    run.stats.extra.update({"kinds": dict(kinds), "formats": dict(formats)})
    return run
