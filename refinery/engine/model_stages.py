"""A row stage that runs a model (the quality classifier, CLIP scoring) on a Ray actor pool.

On the local engine such a stage is an ordinary stage: its maker loads the model and the
partition streams through the processor in the step's process (:func:`execute_stage`). On a
distributed engine it runs as :func:`refinery.engine.model_pool.run_pooled` runs a model stage:

1. decode tasks (CPU) read each slice and turn its rows into model inputs;
2. the model actors (``compute``: ``ray_actors`` actors of ``num_gpus`` GPUs, ``batch_size``
   rows a call) compute each row's outputs (scores) and write them beside the data;
3. one CPU task per slice reads the slice's rows and their outputs back in order and runs the
   stage's *attach* processor (``attach(outputs, model)``: the keep/remove decision from the
   scores, no model), writing the slice's kept and rejected parts.

The driver never loads the model: the stage's ``plan`` gives it the provenance from the model's
files (names, hashes, configuration) and the report processor, which absorbs each slice's
summary. It commits the parts folder when every slice's parts are there, as the Ray engine does.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from refinery.engine.model_pool import ModelPool, ModelStage, PoolRun, run_pooled
from refinery.engine.object_parts import ObjectResumableParts
from refinery.engine.resume import under_root
from refinery.engine.slices import Slice, process_slice, slice_location
from refinery.kernel.execute import StageOutcome, execute_stage, finish
from refinery.kernel.processor import Processor, as_processor
from refinery.kernel.runner import StageRun, output_schemas
from refinery.kernel.spec import ProcessorMaker, StageContext
from refinery.stats import Histogram, StageStats
from refinery.storage import PartsWriter

SCRATCH = ".model_pool"  # under the storage root: the actors' outputs, removed after the run


@dataclass
class PooledStage:
    """A model row stage as the pool runs it (made on the driver, without loading the model).

    ``model``: decode/load/infer/describe for the actors. ``attach(outputs, model_info)``: on a
    CPU task, the processor that decides one slice's rows from their outputs (an Arrow table, row
    for row). ``report(model_info)``: on the driver, the processor whose ``report()`` and
    ``summary()`` the stage shows; it absorbs every slice's ``summary()``."""

    model: ModelStage
    attach: Callable[[Any, dict], Processor]
    report: Callable[[dict], Processor]
    pool: ModelPool


def execute_model_stage(
    ctx: StageContext, make: ProcessorMaker, gpus: float = 0, *, plan: Callable[[StageContext], PooledStage]
) -> StageOutcome:
    """``make`` in the step's process on the local engine; ``plan`` on a Ray actor pool otherwise."""
    if not ctx.engine.distributed:
        return execute_stage(ctx, make, gpus)
    run, process = run_pooled_stage(ctx, plan(ctx))
    return finish(ctx, run, process, rows_in=ctx.rows_in() - run.stats.rows_routed)


@dataclass
class WriteSlice:
    """The per-slice task: the attach processor over the slice's rows, its two parts written."""

    attach: Callable[[Any, dict], Processor]
    writer: PartsWriter
    schema: Any
    rejected_schema: Any
    histograms: dict
    text_column: str
    batch_rows: int

    def __call__(self, piece: Slice, outputs: Any, model: dict) -> dict:
        process = as_processor(self.attach(outputs, model))
        stats = process_slice(
            piece,
            process,
            self.writer,
            self.schema,
            self.rejected_schema,
            self.histograms,
            self.text_column,
            self.batch_rows,
        )
        return {"index": piece.index, "stats": stats, "summary": dict(process.summary())}


def slice_outputs(ctx: StageContext) -> tuple[Any, Any, Any, PartsWriter | ObjectResumableParts]:
    """What a pooled stage writes with: the upstream's location (a local path, or its URI on an
    object store root), the kept and rejected schemas (the upstream's plus the stage's fields and
    provenance), and the writer of its part files: staging folders renamed into place on a local
    root; on an object store root the parts written in place under the run's name, committed by the
    manifests (:class:`~refinery.engine.object_parts.ObjectResumableParts`)."""
    spec = ctx.spec
    schema, rejected_schema = output_schemas(
        ctx.storage.schema(spec.upstream, ctx.source),
        list(spec.fields),
        spec.names_duplicates,
        ctx.provenance,
    )
    upstream = slice_location(ctx.storage, spec.upstream, ctx.source)
    if isinstance(ctx.storage.root, Path):
        return upstream, schema, rejected_schema, PartsWriter(ctx.storage, spec.name, ctx.source)
    # Named after this run (a pooled stage computes every slice again on a retry, as on a local root).
    run = uuid.uuid4().hex[:12]
    writer = ObjectResumableParts(str(ctx.storage.root), spec.name, ctx.source, run, ctx.provenance)
    return upstream, schema, rejected_schema, writer


def run_pooled_stage(ctx: StageContext, pooled: PooledStage) -> tuple[StageRun, Processor]:
    """Run a model row stage on the context's (Ray) engine; returns the run and the driver's
    report processor."""
    started = time.perf_counter()
    spec = ctx.spec
    upstream, schema, rejected_schema, writer = slice_outputs(ctx)
    job = WriteSlice(
        pooled.attach,
        writer,
        schema,
        rejected_schema,
        dict(spec.histograms),
        spec.text_column,
        getattr(ctx.params, "batch_rows", None) or spec.batch_rows,
    )
    try:
        pool_run: PoolRun = run_pooled(
            ctx.engine, upstream, pooled.model, pooled.pool, job, under_root(ctx.storage, SCRATCH)
        )
        path, rejected_path = writer.commit(len(pool_run.parts))
    except BaseException:
        writer.abort()
        raise
    parts = sorted(pool_run.parts, key=lambda p: p["index"])
    stats = StageStats(
        histograms={n: Histogram(e) for n, e in spec.histograms.items()}, text_column=spec.text_column
    )
    process = as_processor(pooled.report(pool_run.model))
    for part in parts:
        stats.merge(part["stats"])
        if part["summary"]:
            process.absorb(part["summary"])
    ctx.log.info(
        f"{spec.name}[{ctx.source}]: {pool_run.slices} slices on a Ray pool of {pooled.pool.actors} model "
        f"actor(s) ({pool_run.nodes} node(s), loads per actor {sorted(pool_run.loads.values())})"
    )
    run = StageRun(spec.name, ctx.source, path, rejected_path, time.perf_counter() - started, stats, schema)
    run.extra["engine"] = {**ctx.engine.describe(), "model_pool": pool_run.describe()}
    return run, process
