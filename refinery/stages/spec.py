"""What a partitioned stage is, independent of the orchestrator that runs it.

A stage reads one partition of its upstream asset in batches, hands each batch to a batch
processor (``(DataFrame) -> BatchResult``), and writes what it keeps and what it rejects with a
reason. Everything else about it is data: its name, where it reads from, its parameter model,
the columns it adds, the score histograms it reports, whether rejected rows name the document
they duplicate, and which column holds its text. ``assets/factory.py`` turns a spec and a
processor maker into a Dagster asset; the same spec drives the local and the Ray engines.

A processor may also offer two optional methods, called once after the whole partition:
``report() -> dict`` (metadata for the UI, in :mod:`refinery.metadata` values) and
``summary() -> dict`` (JSON-ready counts saved beside the partition's data). A maker may return
a context manager instead of a processor when the stage holds something open for the run (a dedup
index, a frame store): it is entered before the first batch and exited after the last, with the
exception if the run failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pydantic import BaseModel

from refinery.batch import BatchProcessor
from refinery.paths import Layout
from refinery.storage import DEFAULT_BATCH_ROWS, Storage


@dataclass(frozen=True)
class StageSpec:
    """One partitioned stage: what it reads, what it adds, what it reports."""

    name: str
    kind: str  # the inbox kind whose partitions it runs over: text, sft, image_text, video
    description: str
    upstream: str | None = None  # the asset whose partition it reads; None reads the inbox
    params: type[BaseModel] | None = None  # its parameters (the orchestrator's config)
    fields: tuple[pa.Field, ...] = ()  # the columns it adds to its upstream's
    histograms: Mapping[str, Sequence[float]] = field(default_factory=dict)  # column -> bin edges
    score_columns: tuple[str, ...] = ()  # shown beside the sample rows
    names_duplicates: bool = False  # rejected rows carry duplicate_of and similarity
    text_column: str = "text"  # what sizes are counted on and the non-empty check reads
    reads_also: tuple[str, ...] = ()  # other assets it depends on (models, embeddings)
    kinds: frozenset[str] = frozenset()  # technologies it uses beyond Python and Parquet
    batch_rows: int = DEFAULT_BATCH_ROWS
    # Each row is decided from that row alone (no index, no whole-partition plan), so an engine
    # may split the partition over workers and get the same rows and reasons in the same order.
    parallel: bool = False

    @property
    def deps(self) -> list[str]:
        """Every asset it reads, its upstream first."""
        return [*([self.upstream] if self.upstream else []), *self.reads_also]


class StageLog:
    """The logger a stage writes to: the orchestrator's, or Python's when run alone."""

    def __init__(self, logger: Any = None):
        self._logger = logger or logging.getLogger("refinery")

    def __getstate__(self) -> dict:
        return {}  # a copy sent to another process logs there, to Python's logging

    def __setstate__(self, state: dict) -> None:
        self._logger = logging.getLogger("refinery")

    def info(self, message: str) -> None:
        self._logger.info(message)

    def warning(self, message: str) -> None:
        self._logger.warning(message)


@dataclass
class StageContext:
    """What a processor maker may use: the partition, its parameters, where data lives, the
    run's resources (models, indexes) and its log. ``provenance`` is stamped into the output
    files (a maker adds the model it loaded); ``metadata`` and ``summary`` collect what the maker
    reports beyond the processor's own ``report()``/``summary()``."""

    spec: StageSpec
    source: str
    params: BaseModel | None
    layout: Layout
    storage: Storage
    resources: Any = None
    resource_keys: tuple[str, ...] = ()  # the resources a maker may read (what travels to workers)
    engine: Any = None  # where batches run (refinery.engine): makers may map a whole column on it
    log: StageLog = field(default_factory=StageLog)
    provenance: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def rows_in(self) -> int:
        """Rows of the upstream partition, read from its file (what the accounting check uses)."""
        return self.storage.row_count(self.spec.upstream, self.source) if self.spec.upstream else 0


ProcessorMaker = Callable[[StageContext], BatchProcessor | AbstractContextManager[BatchProcessor]]
