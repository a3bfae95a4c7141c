"""The target set DSIR measures the corpus against: ``$REFINERY_HOME/inbox/target/<name>/``.

Read with the text inbox's reader, so the same formats work (JSONL, JSONL.gz, Parquet, text
files) and bad lines are counted with their reasons rather than failing the run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.paths import Layout

TARGET_KIND = "target"


@dataclass
class TargetStats:
    folder: str
    documents: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)


def target_batches(layout: Layout, name: str, stats: TargetStats | None = None) -> Iterator[list[str]]:
    """Texts of the target set, in batches; fills ``stats`` as it goes."""
    folder = layout.inbox_source(TARGET_KIND, name)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"no target set at {folder}: put documents that look like what the model should be good at "
            f"there (JSONL/Parquet/text, as the text inbox), e.g. with refinery.sample.target_sample"
        )
    reader = SourceReader(folder, name, IngestParams())
    for batch in reader.batches():
        texts = [d["text"] for d in batch.documents]
        if stats is not None:
            stats.documents += len(texts)
        if texts:
            yield texts
    if stats is not None:
        stats.quarantined = reader.stats.quarantined
        stats.reasons.update(reader.stats.reasons)
