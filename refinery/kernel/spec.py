"""What a partitioned stage is, the context it runs in, and the engine that runs it (a protocol),
independent of the orchestrator.

A stage reads one partition of its upstream asset in batches, hands each batch to a batch
processor (``(DataFrame) -> BatchResult``), and writes what it keeps and what it rejects with a
reason. Everything else about it is data: its name, where it reads from, its parameter model,
the columns it adds, the score histograms it reports, whether rejected rows name the document
they duplicate, and which column holds its text. ``assets/factory.py`` turns a spec and a
processor maker into a Dagster asset; the same spec drives the local and the Ray engines.

A processor's optional hooks (``route``, ``report``, ``summary``, ``absorb``) are its contract in
:mod:`refinery.kernel.processor`. Where batches run is the :class:`Engine`'s, which the caller (the
Dagster layer, a test, a benchmark) puts in the context: the kernel never picks one. Two keep the
contract: :class:`refinery.engine.local.LocalEngine` (this process, batch after batch; needs nothing
installed) and :class:`refinery.engine.ray_engine.RayEngine` (a Ray cluster's workers). Code that
uses an engine calls its methods and reads ``distributed``; it never tests which class it holds.

A maker may return a context manager instead of a processor when the stage holds something open
for the run (a dedup index, a frame store): it is entered before the first batch and exited after
the last, with the exception if the run failed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel

from refinery.batch import BatchProcessor
from refinery.kernel.processor import Processor, Reporting
from refinery.kernel.runner import StageRun
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
    # Each row is decided from that row alone, or from a plan the step made first and the workers
    # read (perplexity's corpus cut-offs, semantic dedup's shuffle, SFT's claims), so an engine may
    # split the partition over workers and get the same rows and reasons in the same order.
    parallel: bool = False
    # A table written beside the documents (the embeddings): neither a filter nor the next stage's
    # upstream (refinery.kernel.pipeline.chain skips it).
    side_table: bool = False

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


Task = Callable[..., dict]


class TaskRunner(Protocol):
    """Runs ``fn(*args)`` for every args tuple, the results in the same order. A task reads and
    writes files and returns a small dict of counts: the rows never come back to the caller."""

    name: str

    def map(self, fn: Task, args: Sequence[tuple]) -> list[dict]: ...


class Engine(Protocol):
    """Runs a stage over a partition, writes a column computed over a partition's slices as part
    files, and runs independent tasks (the shuffles' steps). Results are the same, row for row and
    in order, on every engine; no method gathers a partition's rows in the caller's process."""

    name: str  # shown in metadata: where the work ran
    # True when work runs in other processes (workers): a maker then computes a whole column
    # ahead on the workers (map_to_parts) instead of batch by batch in the step's process.
    distributed: bool

    def run(self, ctx: StageContext, make: ProcessorMaker, gpus: float = 0) -> tuple[StageRun, Reporting]:
        """Stream ``ctx``'s partition through the processor ``make(ctx)`` gives and write the
        stage's files; returns the run and the processor (for its report and summary)."""
        ...

    def map_to_parts(
        self,
        location: Path | str,
        make_fn: Callable[[], Callable[[pd.DataFrame], pd.DataFrame | pa.Table]],
        columns: list[str],
        folder: Path | str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        gpus: float = 0,
        summarize: Callable[[pa.Table], Any] | None = None,
    ) -> list[dict]:
        """``fn(batch)`` for every slice of the partition, written where it is computed as
        ``folder/part-<slice>.parquet`` (rows in order; part ``i`` is slice ``i`` of the engine's
        plan), each followed by a done marker; returns per part ``{index, rows, summary, seconds,
        reused}`` in order, ``summary = summarize(part)`` computed by the worker (keep it small: a
        quantile sketch). The column never comes to the caller. Parts already complete in
        ``folder`` (an earlier attempt's) are skipped. On an object store root ``location`` and
        ``folder`` are URIs with the root's options (:func:`refinery.engine.slices.slice_location`,
        :func:`refinery.engine.resume.scratch_folder`)."""
        ...

    def tasks(self) -> tuple[TaskRunner, int]:
        """A runner of independent tasks and how many it runs at once: the steps of a Parquet
        shuffle (corpus-wide dedup) go through it, so every row is read and written by a worker."""
        ...

    def parallelism(self) -> int:
        """How many workers take tasks at once (1 for the local engine): how finely to cut work."""
        ...

    def check_reachable(self) -> None:
        """Raise before anything is written when the engine cannot run (a cluster that does not
        answer); nothing to check for the local engine."""
        ...

    def describe(self) -> dict:
        """What the metadata shows about the engine (its name, address, workers…)."""
        ...


class StageResources:
    """The run's resources as the library sees them: plain objects (a model loader, an index's or a
    client's configuration), by resource key, read as attributes (``run.resources.kenlm``). The
    orchestrator hands over only the ones a stage names, each as its ``plain()`` value, so they
    pickle and the context travels to an engine's workers as it is. A name the stage did not ask
    for is an error that lists the ones it did."""

    def __init__(self, values: Mapping[str, Any] | None = None):
        self._values = dict(values or {})

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(
                f"resource {name!r} is not among this stage's resources {sorted(self._values)}: "
                "name it in the stage's resources="
            ) from None

    def __contains__(self, name: str) -> bool:
        return name in self._values

    def keys(self) -> list[str]:
        return sorted(self._values)


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
    engine: Engine  # where batches run (refinery.engine): makers may map a whole column on it
    resources: StageResources = field(default_factory=lambda: StageResources())
    log: StageLog = field(default_factory=StageLog)
    provenance: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)
    summary: dict = field(default_factory=dict)

    def rows_in(self) -> int:
        """Rows of the upstream partition, read from its file (what the accounting check uses)."""
        return self.storage.row_count(self.spec.upstream, self.source) if self.spec.upstream else 0


# A processor class (refinery.kernel.processor) or a plain batch function, or a context manager yielding one.
Made = Processor | BatchProcessor
ProcessorMaker = Callable[[StageContext], Made | AbstractContextManager[Made]]
