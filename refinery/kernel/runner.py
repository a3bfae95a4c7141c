"""Running one stage over one partition: stream the input, write kept and rejected rows.

Every text stage is "read the upstream partition in batches, transform each batch into kept and
rejected rows, write both atomically". Keeping that loop here gives every stage the same
guarantees (``rows in = rows out + rows rejected``, atomic files, bounded memory) and the same
statistics for the UI.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from refinery.batch import BatchResult
from refinery.kernel.processor import Processor, as_processor, routed_input
from refinery.schema import DUPLICATE_FIELDS, extend, with_reasons
from refinery.stats import Histogram, StageStats
from refinery.storage import DEFAULT_BATCH_ROWS, Storage, stamped


@dataclass
class StageRun:
    asset: str
    partition: str
    path: Path
    rejected_path: Path
    seconds: float
    stats: StageStats
    schema: pa.Schema
    extra: dict = field(default_factory=dict)

    @property
    def mb_per_s(self) -> float:
        return self.stats.chars_in / 1e6 / self.seconds if self.seconds > 0 else 0.0


def output_schemas(
    in_schema: pa.Schema, new_fields: list[pa.Field], names_duplicates: bool, provenance: dict | None = None
) -> tuple[pa.Schema, pa.Schema]:
    """A stage's output schema (its input's columns, then its own) and its rejected schema (plus
    the reasons, and duplicate_of/similarity for dedup stages); stamped when ``provenance`` is given."""
    schema = extend(in_schema, new_fields)
    rejected = with_reasons(schema, DUPLICATE_FIELDS if names_duplicates else None)
    if provenance is None:
        return schema, rejected
    return stamped(schema, provenance), stamped(rejected, provenance)


def run_stage(
    storage: Storage,
    upstream: str,
    asset: str,
    partition: str,
    process: Processor | Callable[..., BatchResult],
    new_fields: list[pa.Field],
    provenance: dict,
    histograms: dict[str, Histogram] | None = None,
    names_duplicates: bool = False,
    batch_rows: int = DEFAULT_BATCH_ROWS,
    text_column: str | None = "text",
) -> StageRun:
    """Apply ``process`` to every batch of ``upstream``'s partition and write ``asset``'s.

    ``text_column`` names the column whose size is reported (``caption`` for image-text pairs,
    ``prompt`` for SFT records); ``None`` for rows without text.
    """
    started = time.perf_counter()
    process = as_processor(process)
    schema, rejected_schema = output_schemas(
        storage.schema(upstream, partition), new_fields, names_duplicates
    )
    stats = StageStats(histograms=histograms or {}, text_column=text_column)
    with storage.writer(asset, partition, schema, rejected_schema, provenance) as writer:
        for batch in storage.iter_batches(upstream, partition, batch_rows=batch_rows):
            batch, routed = routed_input(process, batch)
            stats.rows_routed += routed
            result = process(batch)
            writer.write(result.kept, result.rejected)
            stats.observe(batch, result)
    return StageRun(
        asset, partition, writer.path, writer.rejected_path, time.perf_counter() - started, stats, schema
    )
