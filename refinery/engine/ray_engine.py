"""The Ray engine: a stage's slices processed on the cluster's workers, parts committed as a whole.

The library operators run unchanged: the partition's slices (:mod:`refinery.engine.slices`) go
to the cluster's workers as Ray tasks on warm worker processes (:mod:`refinery.engine.slice_tasks`;
a pool of Ray actors fed one slice at a time with ``dispatch="actors"`` or when a stage asks for
GPUs; Ray Data's ``map_batches`` with ``dispatch="ray-data"``), each worker building the stage's
processor once per run (so a model is loaded once per worker) and writing the two part files of
every slice it is given. The driver commits the parts folder only when every
slice's parts are there (:class:`PartsWriter`), so a partition is complete or absent, never
partial; a slice whose worker died is retried by Ray and rewrites the same part names.

**Ordering rule.** Part ``i`` holds slice ``i``, slices follow the upstream files and row groups
in order, and rows keep their order within a slice: reading the parts in name order gives the
rows, reasons and columns the local engine writes, in the same order. Only stages whose processor
decides each row from that row alone, or from a plan the step made first (``StageSpec.parallel``:
perplexity's corpus cut-offs, the dedup stages' claims, semantic dedup's shuffle, SFT's checks and
selection) are split; the others write from the driver, as with the local engine.

A processor that counts across batches (e.g. PII totals) offers ``absorb(summary)``: each slice
returns what its counts grew by, and the driver's own processor absorbs them for the report.

**Retries.** The staging folders are named by the stage's fingerprint (:mod:`refinery.engine.resume`)
and kept when an attempt fails; each worker marks a slice done after both its parts. A retried step
(Dagster's retry, or the same partition run again) re-plans the same slices and sends only those
without a valid marker; the driver takes the others' statistics from their markers.

**A first pass on the workers.** :meth:`RayEngine.map_to_parts` computes a column per slice (the
perplexities, the MinHash signatures) and has the workers write it as parts; the driver receives
per-part metadata only (row counts and a small summary, e.g. a quantile sketch), never the column.
"""

from __future__ import annotations

import logging
import pickle
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from refinery.engine.object_parts import ObjectResumableParts
from refinery.engine.resume import ResumableParts, data_version, fingerprint, read_marker
from refinery.engine.slice_tasks import prestart, task_map
from refinery.engine.slices import (
    ColumnFn,
    Slice,
    Summarize,
    plan_slices,
    process_slice,
    slice_location,
    write_column_part,
)
from refinery.kernel.execute import entered, make_processor, run_partition
from refinery.kernel.processor import Processor
from refinery.kernel.runner import StageRun, output_schemas
from refinery.kernel.spec import ProcessorMaker, StageContext, StageLog, TaskRunner
from refinery.stats import Histogram, StageStats
from refinery.storage import DEFAULT_BATCH_ROWS

log = logging.getLogger(__name__)


class RayUnavailable(ConnectionError):
    """The Ray cluster named by the engine's address cannot be reached."""


@dataclass
class RayEngine:
    """Runs parallel stages on the Ray cluster at ``address``.

    ``address``: ``auto`` (the cluster this machine belongs to, or ``$RAY_ADDRESS``),
    ``ray://host:10001`` (Ray Client), ``host:port`` (a head node's GCS), or ``local`` (start a
    cluster in this process with ``num_cpus``). ``workers`` is the actor pool size (default: one per
    CPU of the cluster), ``slice_rows`` the rows per slice and part file. ``runtime_env`` is passed
    to ``ray.init`` (e.g. env vars).
    """

    address: str = "auto"
    workers: int | None = None
    slice_rows: int = 20_000
    num_cpus: int | None = None  # for address 'local'
    cpus_per_worker: float = 1.0
    runtime_env: dict = field(default_factory=dict)
    connect_timeout_s: float = 10.0
    node_ip_address: str | None = None  # e.g. 127.0.0.1 when the cluster listens on loopback only
    # How slices reach the workers: "tasks" (Ray tasks on the job's warm worker processes, each
    # building the processor once per map: refinery.engine.slice_tasks; stages asking for GPUs use
    # actors), "actors" (a pool of Ray actors per map, fed one slice at a time by this process, each
    # taking the next as it finishes) or "ray-data" (Ray Data's map_batches over an actor pool).
    # The last two are kept for comparison: benchmarks/bench_ray_scaling.py.
    dispatch: str = "tasks"
    name = "ray"
    distributed = True

    def describe(self) -> dict:
        return {
            "engine": self.name,
            "address": self.address,
            "workers": self.workers,
            "slice_rows": self.slice_rows,
            "dispatch": self.dispatch,
        }

    # -- connecting ---------------------------------------------------------------------------
    def connect(self) -> None:
        """Attach to (or, for ``local``, start) the cluster once per process. An address that does
        not answer fails at once with its name (``ray.init`` itself would retry for minutes)."""
        import ray

        if ray.is_initialized():
            return
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if self.runtime_env:
            kwargs["runtime_env"] = self.runtime_env
        if self.node_ip_address:
            kwargs["_node_ip_address"] = self.node_ip_address
        address = None if self.address == "local" else self.address
        if address is None:
            kwargs.update(num_cpus=self.num_cpus, include_dashboard=False)
        else:
            self.check_reachable()
        try:
            ray.init(address=address, **kwargs)
        except Exception as err:  # Ray raises ConnectionError, RuntimeError or its own types
            raise RayUnavailable(self._unreachable(f"{type(err).__name__}: {err}")) from err

    def check_reachable(self) -> None:
        """A TCP connection to the head's address (``host:port`` and ``ray://`` forms), or
        :class:`RayUnavailable` naming it."""
        import socket

        target = self.address.removeprefix("ray://")
        if target in ("auto", "local") or ":" not in target:
            return
        host, _, port = target.rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=self.connect_timeout_s):
                pass
        except (OSError, ValueError) as err:
            raise RayUnavailable(self._unreachable(str(err))) from err

    def _unreachable(self, why: str) -> str:
        return (
            f"cannot reach the Ray cluster at {self.address!r}: {why}. Start one (`ray start --head`), set "
            "the engine's address to a running cluster, or use engine kind 'local'. Nothing was written."
        )

    def pool_size(self) -> int:
        import ray

        if self.workers:
            return self.workers
        return max(1, int(ray.cluster_resources().get("CPU", 1) // self.cpus_per_worker))

    def tasks(self) -> tuple[TaskRunner, int]:
        """(a runner of independent Ray tasks on this cluster, the number of workers): the shuffle
        steps of :mod:`refinery.dedup.corpus_shuffle` run through it."""
        from refinery.engine.tasks import RayTasks

        self.connect()
        return RayTasks(cpus=self.cpus_per_worker), self.pool_size()

    # -- running a stage ----------------------------------------------------------------------
    def run(self, ctx: StageContext, make: ProcessorMaker, gpus: float = 0) -> tuple[StageRun, Processor]:
        if not ctx.spec.parallel:
            with entered(make(ctx)) as process:  # needs the whole partition in order: on the driver
                return run_partition(ctx, process), process
        self.connect()
        if self.dispatch == "tasks" and not gpus:  # the workers start while the driver builds and plans
            prestart(self.pool_size(), self.cpus_per_worker)
        # The driver's own processor: loads once, updates the provenance, gives the report; a maker
        # may hold something for the run (perplexity's first pass), released once it is committed.
        with entered(make(ctx)) as process:
            return self._run_slices(ctx, make, process, gpus), process

    def _run_slices(
        self, ctx: StageContext, make: ProcessorMaker, process: Processor, gpus: float
    ) -> StageRun:
        started = time.perf_counter()
        spec = ctx.spec
        upstream = slice_location(ctx.storage, spec.upstream, ctx.source)
        slices = plan_slices(upstream, self.slice_rows)
        schema, rejected_schema = output_schemas(
            ctx.storage.schema(spec.upstream, ctx.source),
            list(spec.fields),
            spec.names_duplicates,
            ctx.provenance,
        )
        key = fingerprint(
            spec.name,
            ctx.source,
            data_version(upstream),
            [(Path(s.file).name, s.row_groups, s.rows) for s in slices],
            ctx.provenance,
            str(schema),
        )
        writer = resumable_parts(ctx, key)
        job = SliceJob(
            context=_portable(ctx),
            make=make,
            writer=writer,
            schema=schema,
            rejected_schema=rejected_schema,
            batch_rows=getattr(ctx.params, "batch_rows", None) or spec.batch_rows,
        )
        # A retry skips the slices an earlier attempt completed (their markers hold their results).
        reused = {s.index: done for s in slices if (done := writer.done(s.index)) is not None}
        todo = [s for s in slices if s.index not in reused]
        # On failure the staging folders stay, under the fingerprint, for the retry to resume.
        planned = time.perf_counter()
        map_started = time.time()
        results = self._map(job, todo, gpus) if todo else []
        mapped = time.perf_counter()
        results += [{**done, "index": i} for i, done in reused.items()]
        stats = _merge_stats(results, spec.histograms, spec.text_column)
        for delta in (r["summary"] for r in sorted(results, key=lambda r: r["index"])):
            if delta:
                process.absorb(delta)
        path, rejected_path = writer.commit(len(slices))
        timings = slice_timings(
            [r["timing"] for r in results if r.get("timing")],
            map_started,
            plan_s=planned - started,
            map_s=mapped - planned,
            finish_s=time.perf_counter() - mapped,
        )
        ctx.log.info(
            f"{spec.name}[{ctx.source}]: {len(slices)} slices on Ray ({self.address}), "
            f"{len(todo)} processed, {len(reused)} reused from an earlier attempt, "
            f"{len({r['node'] for r in results})} node(s), {len({r['worker'] for r in results})} worker(s)"
        )
        run = StageRun(
            spec.name, ctx.source, path, rejected_path, time.perf_counter() - started, stats, schema
        )
        run.extra["engine"] = {
            **self.describe(),
            "slices": len(slices),
            "slices_processed": len(todo),
            "slices_reused": len(reused),
            "nodes": len({r["node"] for r in results}),
            "workers_used": len({r["worker"] for r in results}),
            "timings": timings,
        }
        return run

    def map_to_parts(
        self,
        location: Any,
        make_fn: Callable[[], ColumnFn],
        columns: list[str],
        folder: Path | str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        gpus: float = 0,
        summarize: Summarize | None = None,
    ) -> list[dict]:
        """``fn(batch)`` (a frame of columns, one row per input row) for every slice of a partition,
        computed and written by a pool of actors as ``folder/part-<slice>.parquet`` (``folder`` a local
        path, or a URI on the storage root's object store, which every worker opens); returns per
        part ``{index, rows, summary, seconds, reused}`` in slice order (``summary =
        summarize(part)``, computed by the worker: keep it small). The column never comes here.
        Slices whose part is complete from an earlier attempt (their done marker) are not sent."""
        from ray import cloudpickle

        self.connect()
        slices = plan_slices(location, self.slice_rows)
        reused = {s.index: done for s in slices if (done := read_marker(folder, s.index)) is not None}
        todo = [s for s in slices if s.index not in reused]
        results = [{**done, "reused": True} for done in reused.values()]
        if todo:
            payload = cloudpickle.dumps((make_fn, columns, str(folder), batch_rows, summarize))
            rows = self.pool_map(PartsActor, payload, todo, gpus)
            raise_failed([r for r in rows if r["error"]], len(slices))
            results += [pickle.loads(r["result"]) for r in rows]
        return sorted(results, key=lambda r: r["index"])

    def parallelism(self) -> int:
        """The actor pool size (connects to the cluster to count its CPUs when not set)."""
        self.connect()
        return self.pool_size()

    def pool_map(self, actor: type, payload: bytes, slices: list[Slice], gpus: float) -> list[dict]:
        """Every slice through ``actor(payload)``; one row dict per slice, in the order they finished.
        With ``dispatch="tasks"`` (and no GPUs) the slices are Ray tasks on warm worker processes
        (:func:`refinery.engine.slice_tasks.task_map`); otherwise ``actor(payload)`` is started
        ``min(pool size, slices)`` times as actors and every slice given to one of them. A pool
        actor's process that dies is restarted by Ray and its slice retried there
        (``max_restarts``/``max_task_retries`` 4, as a slice task's retries: a slice that kills its
        process every time fails the run instead of restarting it forever);
        an exception raised by the stage itself comes back in the slice's row (``error``) and is
        not retried."""
        if self.dispatch == "ray-data":
            return self._ray_data_map(actor, payload, slices, gpus)
        if self.dispatch == "tasks" and not gpus:
            return task_map(actor, payload, slices, self.cpus_per_worker)
        import ray

        remote = ray.remote(
            num_cpus=self.cpus_per_worker, num_gpus=gpus or 0, max_restarts=4, max_task_retries=4
        )(PooledActor)
        shared = ray.put(payload)  # once in the object store, whatever the pool's size (and for restarts)
        pool = [remote.remote(actor, shared) for _ in range(min(self.pool_size(), len(slices)))]
        queue = [pickle.dumps(s) for s in reversed(slices)]
        pending: dict[Any, Any] = {}
        rows: list[dict] = []
        try:
            # One slice in flight per actor: the next goes to whichever finishes first, so a slow
            # slice holds one worker, not the slices queued behind it (no uneven tail).
            for worker in pool:
                if queue:
                    pending[worker.run.remote({"slice": [queue.pop()]})] = worker
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                worker = pending.pop(done[0])
                if queue:
                    pending[worker.run.remote({"slice": [queue.pop()]})] = worker
                out = ray.get(done[0])
                rows += [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]
        finally:
            for worker in pool:
                ray.kill(worker)
        return rows

    def _ray_data_map(self, actor: type, payload: bytes, slices: list[Slice], gpus: float) -> list[dict]:
        """The earlier path: Ray Data's ``map_batches`` over an actor pool (restarts and retries
        as above: its defaults)."""
        import ray.data

        items = [{"slice": pickle.dumps(s)} for s in slices]
        return (
            ray.data.from_items(items, override_num_blocks=len(items))
            .map_batches(
                actor,
                fn_constructor_kwargs={"payload": payload},
                batch_size=1,
                compute=ray.data.ActorPoolStrategy(size=min(self.pool_size(), len(slices))),
                num_cpus=self.cpus_per_worker,
                num_gpus=gpus or None,
            )
            .take_all()
        )

    def _map(self, job: SliceJob, slices: list[Slice], gpus: float) -> list[dict]:
        from ray import cloudpickle

        payload = cloudpickle.dumps(job)  # makers may be lambdas; cloudpickle sends them by value
        rows = self.pool_map(SliceActor, payload, slices, gpus)
        raise_failed([r for r in rows if r["error"]], len(slices))
        return [
            {
                "index": int(r["index"]),
                "stats": pickle.loads(r["stats"]),
                "summary": pickle.loads(r["summary"]),
                "node": r["node"],
                "worker": r["worker"],
                "timing": pickle.loads(r["timing"]),
            }
            for r in rows
        ]


def resumable_parts(ctx: StageContext, key: str) -> ResumableParts | ObjectResumableParts:
    """Where the workers write a stage's parts: staging folders renamed into place on a local root,
    or in place, committed by the manifest, on an object store root (:mod:`refinery.engine.object_parts`)."""
    if isinstance(ctx.storage.root, Path):
        return ResumableParts(ctx.storage, ctx.spec.name, ctx.source, key)
    return ObjectResumableParts(str(ctx.storage.root), ctx.spec.name, ctx.source, key, ctx.provenance)


class PooledActor:
    """A pool actor of :meth:`RayEngine.pool_map`: ``actor(payload)`` built once (its processor or
    model with it), then ``run`` per slice."""

    def __init__(self, actor: type, payload: bytes):
        self.inner = actor(payload)

    def run(self, batch: dict[str, Any]) -> dict[str, list]:
        return self.inner(batch)


@dataclass
class SliceJob:
    """Everything a worker needs to build the processor and write its slices' parts."""

    context: StageContext
    make: ProcessorMaker
    writer: ResumableParts | ObjectResumableParts
    schema: Any
    rejected_schema: Any
    batch_rows: int


class SliceActor:
    """One Ray actor: builds the stage's processor once, then processes the slices it is given."""

    def __init__(self, payload: bytes):
        started = time.time()
        self.job: SliceJob = pickle.loads(payload)
        self.process = make_processor(replace(self.job.context, log=StageLog(log)), self.job.make)
        self.before: dict = dict(self.process.summary())
        self.ready = time.time()
        self.init_s = self.ready - started

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        import os

        import ray

        out: dict[str, list] = {
            "index": [],
            "stats": [],
            "summary": [],
            "node": [],
            "worker": [],
            "error": [],
            "timing": [],
        }
        job, spec = self.job, self.job.context.spec
        for raw in batch["slice"]:
            piece: Slice = pickle.loads(raw)
            began, cpu = time.time(), time.process_time()
            try:
                stats = process_slice(
                    piece,
                    self.process,
                    job.writer,
                    job.schema,
                    job.rejected_schema,
                    dict(spec.histograms),
                    spec.text_column,
                    job.batch_rows,
                )
            except Exception as err:  # reported to the driver with its type (see SliceFailed)
                for name in ("stats", "summary", "node", "worker"):
                    out[name].append(b"" if name in ("stats", "summary") else "")
                out["index"].append(piece.index)
                out["error"].append(_portable_error(err))
                out["timing"].append(b"")
                continue
            after = dict(self.process.summary())
            node = ray.get_runtime_context().get_node_id()
            result = {
                "stats": stats,
                "summary": _delta(after, self.before),
                "node": node,
                "worker": f"{node}:{os.getpid()}",
            }
            job.writer.mark_done(piece.index, result)  # after both parts: a retry skips this slice
            out["index"].append(piece.index)
            for name in ("stats", "summary"):
                out[name].append(pickle.dumps(result[name]))
            out["node"].append(result["node"])
            out["worker"].append(result["worker"])
            out["error"].append(b"")
            out["timing"].append(
                pickle.dumps(
                    {
                        "start": began,
                        "end": time.time(),
                        "cpu": time.process_time() - cpu,
                        "worker": result["worker"],
                        "init_s": self.init_s,
                        "ready": self.ready,
                    }
                )
            )
            self.before = after
        return out


class SliceFailed(RuntimeError):
    """A slice's processing raised on a worker. Its exception is this one's ``__cause__`` (with its
    type, so a transient failure, such as a refused connection, is retried like one in the step's
    own process); the other slices ran to the end, and a retry skips those that completed."""


def _portable_error(err: Exception) -> bytes:
    """The exception with its remote traceback in its message, pickled; or a RuntimeError with the
    same text when the exception itself cannot be pickled."""
    import traceback

    text = "".join(traceback.format_exception(err)).rstrip()
    try:
        return pickle.dumps((err, text))
    except Exception:
        return pickle.dumps((RuntimeError(f"{type(err).__name__}: {err}"), text))


def raise_failed(failed: list[dict], slices: int) -> None:
    """Raise :class:`SliceFailed` for the first failed slice (by index), from its exception."""
    if not failed:
        return
    first = min(failed, key=lambda r: int(r["index"]))
    try:
        err, text = pickle.loads(first["error"])
    except Exception as unreadable:  # a class the driver cannot import
        err, text = RuntimeError(f"an exception the driver cannot read: {unreadable}"), ""
    indexes = sorted(int(r["index"]) for r in failed)
    raise SliceFailed(
        f"{len(failed)} of {slices} slices failed on the workers (slices {indexes[:10]}"
        f"{'…' if len(indexes) > 10 else ''}); the others are written and a retry skips them. "
        f"Slice {indexes[0]}:\n{text}"
    ) from err


def _portable(ctx: StageContext) -> StageContext:
    """The context without what cannot travel: the orchestrator's logger and its config class. The
    resources are plain objects already (StageResources), so they travel as they are."""
    # The library's own parameter class (the orchestrator's config class need not exist remotely).
    params = ctx.spec.params.model_validate(ctx.params.model_dump()) if ctx.params is not None else None
    return replace(ctx, params=params, log=StageLog(), metadata={}, summary={})


def slice_timings(
    timings: list[dict], map_started: float, plan_s: float, map_s: float, finish_s: float
) -> dict:
    """Where a stage's wall time went, from the driver's clock and each slice's (same machine
    clock on a loopback cluster; across machines the spans carry their clocks' skew):

    - ``plan_s``: the driver's planning (slices, schemas, fingerprint, markers);
    - ``map_s``: the pool's whole run, of which ``startup_s`` passed before the first slice began
      (Ray Data's executor, the actors' processes, imports, the processors built: ``init_s`` per
      actor), ``work_s`` from the first slice's start to the last one's end, and ``drain_s`` from
      there to the pool's results in hand (the actors' shutdown, the results gathered);
    - ``slice_s`` / ``slice_cpu_s``: the slices' own seconds, wall and CPU, summed over workers;
      ``busy`` each worker's share of them, so an uneven tail shows;
    - ``finish_s``: the driver's merge of the stats and the commit of the parts.
    """
    if not timings:
        return {"plan_s": round(plan_s, 3), "map_s": round(map_s, 3), "finish_s": round(finish_s, 3)}
    first = min(t["start"] for t in timings)
    last = max(t["end"] for t in timings)
    busy: dict[str, float] = {}
    init: dict[str, float] = {}
    for t in timings:
        busy[t["worker"]] = busy.get(t["worker"], 0.0) + t["end"] - t["start"]
        init[t["worker"]] = t["init_s"]
    return {
        "plan_s": round(plan_s, 3),
        "map_s": round(map_s, 3),
        "startup_s": round(first - map_started, 3),
        "work_s": round(last - first, 3),
        "slice_s": round(sum(busy.values()), 3),
        "slice_cpu_s": round(sum(t["cpu"] for t in timings), 3),
        "init_s": sorted(round(s, 3) for s in init.values()),
        "busy_s": sorted(round(s, 3) for s in busy.values()),
        "drain_s": round(map_started + map_s - last, 3),
        "finish_s": round(finish_s, 3),
    }


def _delta(after: Any, before: Any) -> Any:
    """What numeric counts grew by between two summaries (nested dicts of numbers)."""
    if isinstance(after, dict):
        return {k: _delta(v, before.get(k) if isinstance(before, dict) else None) for k, v in after.items()}
    if isinstance(after, int | float) and not isinstance(after, bool):
        return after - (before if isinstance(before, int | float) and not isinstance(before, bool) else 0)
    return after


def _merge_stats(results: list[dict], histograms: dict, text_column: str) -> StageStats:
    merged = StageStats(histograms={n: Histogram(e) for n, e in histograms.items()}, text_column=text_column)
    for result in sorted(results, key=lambda r: r["index"]):
        merged.merge(result["stats"])
    return merged


class PartsActor:
    """One Ray actor of :meth:`RayEngine.map_to_parts`: builds ``fn`` once, writes the parts of the
    slices it is given, returns their small per-part dicts."""

    def __init__(self, payload: bytes):
        from ray import cloudpickle

        make_fn, self.columns, self.folder, self.batch_rows, self.summarize = cloudpickle.loads(payload)
        self.fn = make_fn()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        out: dict[str, list] = {"index": [], "result": [], "error": []}
        for raw in batch["slice"]:
            piece: Slice = pickle.loads(raw)
            out["index"].append(piece.index)
            try:
                done = write_column_part(
                    piece, self.fn, self.columns, self.folder, self.batch_rows, self.summarize
                )
            except Exception as err:  # reported to the driver with its type (see SliceFailed)
                out["result"].append(b"")
                out["error"].append(_portable_error(err))
                continue
            out["result"].append(pickle.dumps(done))
            out["error"].append(b"")
        return out
