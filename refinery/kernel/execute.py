"""Executing a stage over one partition: make the processor, stream, report, check.

This is everything a stage asset does apart from talking to the orchestrator, kept here so the
Dagster layer only wires (``assets/factory.py``) and so a stage runs the same from a test, a
benchmark or another engine: the processor maker is called once per partition, the partition is
streamed through the processor, the per-partition stats file is written, and the metadata and the
invariant checks are computed from the files.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

from refinery.batch import BatchProcessor
from refinery.kernel.checks import invariant_checks
from refinery.kernel.collector import RowCollector
from refinery.kernel.ingest import ingest_with_reader
from refinery.kernel.ingest_tasks import ingest_in_tasks
from refinery.kernel.processor import Processor, Reporting, as_processor
from refinery.kernel.report import inbox_metadata, stage_metadata
from refinery.kernel.runner import StageRun, run_stage
from refinery.kernel.spec import ProcessorMaker, StageContext
from refinery.metadata import CheckOutcome, Json
from refinery.stats import Histogram


@dataclass
class StageOutcome:
    """One materialized partition: the run, what to show, and the checks' results."""

    run: StageRun
    metadata: dict[str, Any]
    checks: list[CheckOutcome]


def run_partition(ctx: StageContext, process: Processor | BatchProcessor) -> StageRun:
    """Stream the upstream partition through ``process`` and write the stage's two files, in
    batches of the parameters' ``batch_rows`` where they have one (stages whose rows hold images),
    else the spec's."""
    spec = ctx.spec
    if spec.upstream is None:
        raise ValueError(f"stage {spec.name!r} reads the inbox: run it with execute_ingest")
    return run_stage(
        ctx.storage,
        spec.upstream,
        spec.name,
        ctx.source,
        process,
        list(spec.fields),
        ctx.provenance,
        histograms={name: Histogram(edges) for name, edges in spec.histograms.items()},
        names_duplicates=spec.names_duplicates,
        batch_rows=getattr(ctx.params, "batch_rows", None) or spec.batch_rows,
        text_column=spec.text_column,
    )


@contextmanager
def entered(made: Any) -> Iterator[Processor]:
    """A maker's result entered (a context manager yielding the processor, for a stage that holds
    something open for the run) and made a :class:`Processor` (a plain function gets the default
    hooks)."""
    if isinstance(made, AbstractContextManager):
        with made as process:
            yield as_processor(process)
    else:
        yield as_processor(made)


def make_processor(ctx: StageContext, make: ProcessorMaker) -> Processor:
    """A maker's processor for an engine that keeps no context open around it (a worker's copy)."""
    return as_processor(make(ctx))


def execute_stage(ctx: StageContext, make: ProcessorMaker, gpus: float = 0) -> StageOutcome:
    """Make the processor, run the partition through it on the context's engine (this process or
    a cluster's workers: see :class:`refinery.kernel.spec.Engine`), then report and check."""
    run, process = ctx.engine.run(ctx, make, gpus)
    return finish(ctx, run, process, rows_in=ctx.rows_in() - run.stats.rows_routed)


def execute_ingest(ctx: StageContext, reader: RowCollector) -> StageOutcome:
    """An ingest stage: stream an inbox reader's documents and quarantine rows into storage."""
    if ctx.engine.distributed and reader.PER_FILE:  # one task per file or JSONL range, on the workers
        runner, workers = ctx.engine.tasks()
        params = ctx.spec.params.model_validate(ctx.params.model_dump())  # the library's class travels
        split = getattr(params, "split_bytes", 0)
        run = ingest_in_tasks(
            reader, ctx.storage, ctx.spec.name, ctx.provenance, runner, workers, split, params
        )
        run.extra["engine"] = {**ctx.engine.describe(), **run.extra["engine"]}
        engine = run.extra["engine"]
        if engine["pieces_resumed"]:
            ctx.log.info(
                f"{ctx.spec.name}[{ctx.source}]: resumed an earlier attempt: {engine['pieces_resumed']} "
                f"of {engine['tasks']} pieces already read, {engine['pieces_read']} read now"
            )
    else:
        run = ingest_with_reader(reader, ctx.storage, ctx.spec.name, ctx.provenance)
    meta, warnings = inbox_metadata(run, reader.folder, reader.RECORD_UNIT)
    for warning in warnings:
        ctx.log.warning(warning)
    ctx.metadata = {**meta, **ctx.metadata}
    return finish(ctx, run, reader, rows_in=run.stats.rows_in)


def finish(ctx: StageContext, run: StageRun, process: Reporting, rows_in: int) -> StageOutcome:
    """Save the partition's stats, log the headline, gather metadata and compute the checks."""
    summary = run.stats.summary()
    summary.update(process.summary())
    summary.update(ctx.summary)
    if "engine" in run.extra:
        summary["engine"] = run.extra["engine"]
    ctx.storage.write_stats(run.asset, run.partition, summary)
    ctx.log.info(
        f"{run.asset}[{run.partition}]: {run.stats.rows_in} in, {run.stats.rows_out} out, "
        f"{run.stats.rows_rejected} rejected in {run.seconds:.2f}s"
    )
    metadata = {
        **stage_metadata(run, ctx.params, ctx.spec.score_columns),
        **ctx.metadata,
        **process.report(),
    }
    if "engine" in run.extra:
        metadata["engine"] = Json(run.extra["engine"])
    return StageOutcome(run, metadata, invariant_checks(run, rows_in, ctx.spec.text_column, ctx.storage))
