"""Model stages on Ray: CPU decoding as tasks, then a pool of model actors, each loading once.

A model stage (embeddings, the quality classifier, CLIP scoring, keyframes) is two steps over the
partition's slices (:mod:`refinery.engine.slices`):

1. **decode** (tasks, CPU only): each slice's rows are read from Parquet and turned into model
   inputs by ``decode`` (image bytes to arrays, frames out of a video; for text the identity), with
   every row's (slice, row) position carried along;
2. **infer** (actors): the actor class (:class:`PoolActor`, :class:`ModelActor`) loads the model
   in ``__init__`` (once per actor, never on the driver) and runs ``infer`` on batches of
   ``batch_size`` decoded rows. The pool has ``actors`` actors, each asking for ``num_gpus`` GPUs
   (fractional: 0.25 puts four actors on one GPU) and ``cpus_per_actor`` CPUs.

:mod:`refinery.engine.model_actors` runs them: long-lived actors fed one decoded slice at a time,
decode tasks running ahead (bounded), sized from the CPUs the actors leave on their nodes, and an
idle actor decoding a slice itself rather than waiting on a decode task that cannot start; so a GPU
does not wait for CPU decoding, and no cluster shape makes the run wait forever (the Ray Data
pipeline it replaced hung on two one-CPU nodes). A pool that asks for no GPU, on the ray engine's
default dispatch, runs one task per slice that decodes and infers on warm workers, the model loaded
once per worker process and run (:mod:`refinery.engine.model_tasks`), the outputs written as here.

Two ways to collect what the actors compute:

- :func:`run_pooled` (what the stages use): the actors write their outputs as small Parquet
  files into a scratch folder beside the data, then one CPU task per slice (``finish``) reads its
  slice's outputs back in row order and writes the slice's part (a stage's kept and rejected
  rows, or its embeddings). The driver holds per-part metadata only: counts, stats, the model's
  description (written by the actors: the driver never loads the model) and the loads per actor.
- :func:`run_model_stage`: the per-row outputs gathered in the driver, stacked in row order
  (tests; SFT's selection writes its own files from ``infer`` and returns per-slice counts:
  :func:`refinery.sft.selection_plan.embed_on_pool`).

The pool's shape comes from the ``compute`` resource (:class:`ModelPool`, built by
``ComputeResource.model_pool()``): ``num_gpus``, ``ray_actors`` and ``batch_size``.
"""

from __future__ import annotations

import json
import os
import pickle
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from refinery.engine.model_actors import actor_reports, alive_nodes, fit_actor
from refinery.engine.model_tasks import model_reports
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import Slice, plan_slices
from refinery.models import loads
from refinery.models.pool import ModelPool

ORDER = "__order"


@dataclass(frozen=True)
class ModelStage:
    """What runs where: ``decode(frame) -> frame`` on CPU tasks, ``load() -> model`` once per actor,
    ``infer(model, frame) -> array`` (one row per input row) on the actors. All three must be
    picklable by value (module-level functions, or ``functools.partial`` of them)."""

    columns: list[str]
    load: Callable[[], Any]
    infer: Callable[[Any, Any], Any]  # an array (one row per input row) or a DataFrame of columns
    decode: Callable[[Any], Any] | None = None
    # What the stage reports about the model, taken from an actor's loaded model (JSON-ready).
    describe: Callable[[Any], dict] | None = None


def read_slice(piece: Slice, columns: list[str]):
    """A slice's rows as pandas, with each row's (slice, row) position in :data:`ORDER`."""
    import pandas as pd

    if piece.row_groups:  # a local file, or a part on the root's object store (opened from its URI)
        frame = piece.parquet().read_row_groups(list(piece.row_groups), columns=columns).to_pandas()
    else:
        frame = pd.DataFrame({c: [] for c in columns})
    frame[ORDER] = [piece.index * (1 << 32) + i for i in range(len(frame))]
    return frame


class ModelActor:
    """The model step: the model is loaded in ``__init__``, once per actor."""

    def __init__(self, payload: bytes):
        from ray import cloudpickle

        self.stage: ModelStage = cloudpickle.loads(payload)
        self.model = self.stage.load()

    def __call__(self, frame) -> dict[str, list]:
        import pandas as pd

        out = np.asarray(self.stage.infer(self.model, frame.drop(columns=[ORDER])))
        if len(out) != len(frame):
            raise ValueError(f"the model stage returned {len(out)} rows for {len(frame)}")
        return pd.DataFrame({ORDER: [pickle.dumps(frame[ORDER].to_numpy())], "array": [pickle.dumps(out)]})


def run_model_stage(engine: Any, location: Path, stage: ModelStage, pool: ModelPool) -> np.ndarray:
    """Every row's model output for the partition at ``location``, in row order, computed on the
    engine's Ray cluster by ``pool`` (decode tasks, then the model actors)."""
    from ray import cloudpickle

    engine.connect()
    slices = [s for s in plan_slices(location, engine.slice_rows) if s.rows]
    if not slices:
        return np.zeros((0,))
    rows, _ = actor_reports(slices, cloudpickle.dumps(stage), pool, ModelActor, (), decode_slices)
    order = np.concatenate([pickle.loads(r[ORDER]) for r in rows])
    stacked = np.concatenate([pickle.loads(r["array"]) for r in rows])
    return stacked[np.argsort(order, kind="stable")]


def decode_slices(batch: dict, payload: bytes) -> Any:
    """The CPU step: read each slice of the batch and decode its rows."""
    import pandas as pd
    from ray import cloudpickle

    stage: ModelStage = cloudpickle.loads(payload)
    frames = []
    for raw in batch["slice"]:
        frame = read_slice(pickle.loads(raw), stage.columns)
        if stage.decode is not None:
            # decode sees each row's position (ORDER: SFT's embeddings turn it into a reading
            # position); the rows keep the positions read here, whatever decode returns in it.
            decoded = stage.decode(frame)
            if len(decoded) != len(frame):
                raise ValueError(f"decode returned {len(decoded)} rows for {len(frame)}")
            frame = decoded.reset_index(drop=True).assign(**{ORDER: frame[ORDER].to_numpy()})
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


# -- outputs written by the actors, parts written by per-slice tasks ------------------------------
MODEL_FILE = "model.json"


@dataclass
class PoolRun:
    """What the driver learns from a pooled run: per-slice results, in slice order, and metadata."""

    parts: list[dict]  # what ``finish`` returned for each slice
    model: dict  # ``describe(model)`` as an actor wrote it
    loads: dict[str, int]  # models loaded per actor process ("node:pid"), counted in that process
    nodes: int
    batches: int
    seconds: float
    infer_seconds: float = 0.0  # summed over the actors
    slices: int = 0
    pool: dict = field(default_factory=dict)

    def describe(self) -> dict:
        """The pool's figures for a stage's metadata."""
        return {
            **self.pool,
            "slices": self.slices,
            "batches": self.batches,
            "nodes": self.nodes,
            "actors_used": len(self.loads),
            "model_loads_per_actor": sorted(self.loads.values()),
            "model_seconds": round(self.infer_seconds, 3),
            "seconds": round(self.seconds, 3),
        }


def output_table(out: Any, rows: int) -> Any:
    """An ``infer`` result as an Arrow table: a DataFrame's columns, or an array as ``output``
    (a matrix as a fixed-size list per row)."""
    import pandas as pd
    import pyarrow as pa

    if isinstance(out, pd.DataFrame):
        table = pa.Table.from_pandas(out.reset_index(drop=True), preserve_index=False)
    else:
        array = np.asarray(out)
        if array.ndim == 2:
            flat = pa.array(np.ascontiguousarray(array).reshape(-1))
            column = pa.FixedSizeListArray.from_arrays(flat, array.shape[1])
        else:
            column = pa.array(array)
        table = pa.table({"output": column})
    if table.num_rows != rows:
        raise ValueError(f"the model stage returned {table.num_rows} rows for {rows}")
    return table


class PoolActor:
    """The model step of :func:`run_pooled`: loads the model once in ``__init__``, then writes the
    outputs of every batch it is given into the scratch folder, one file per slice it touches.
    ``scratch`` is a local folder or a URI on the storage root's object store (the actor opens
    its filesystem from it); the names it wrote go back to the driver with the batch's figures."""

    def __init__(self, payload: bytes, scratch: str):
        import ray
        from ray import cloudpickle

        self.stage: ModelStage = cloudpickle.loads(payload)
        self.scratch = RootFolder(scratch).make()
        self.model = self.stage.load()
        self.worker = f"{ray.get_runtime_context().get_node_id()}:{os.getpid()}"
        self.loads = loads.total
        if self.stage.describe is not None:
            described = json.dumps(self.stage.describe(self.model), default=str)
            self.scratch.write_bytes(MODEL_FILE, described.encode())

    def outputs(self, frame) -> Any:
        """The model's outputs for ``frame``'s rows (decoded, with :data:`ORDER`) as an Arrow table."""
        return output_table(self.stage.infer(self.model, frame.drop(columns=[ORDER])), len(frame))

    def __call__(self, frame) -> dict[str, list]:
        import pyarrow as pa

        started = time.perf_counter()
        order = frame[ORDER].to_numpy(dtype=np.int64)
        table = self.outputs(frame)
        seconds = time.perf_counter() - started
        table = table.append_column(ORDER, pa.array(order, pa.int64()))
        slices = order >> 32
        written = []
        for piece in np.unique(slices):
            rows = np.flatnonzero(slices == piece)
            first = int(order[rows].min() & 0xFFFFFFFF)
            name = output_name(int(piece), first)
            # a retried batch rewrites the same name
            self.scratch.write_table(name, table.take(pa.array(rows)))
            written.append(name)
        return {
            "files": [json.dumps(written)],
            "worker": [self.worker],
            "rows": [len(frame)],
            "loads": [self.loads()],
            "seconds": [seconds],
        }


def describe_model(payload: bytes) -> dict:
    """A worker loads the model only to describe it (an empty partition: no actor was started)."""
    from ray import cloudpickle

    stage: ModelStage = cloudpickle.loads(payload)
    return stage.describe(stage.load()) if stage.describe is not None else {}


def output_name(piece: int, first: int) -> str:
    """The actors' output file of slice ``piece`` whose first row is ``first`` (a batch can span
    slices, and a slice several batches)."""
    return f"out-{piece:05d}-{first:09d}.parquet"


def slice_of(name: str) -> int:
    return int(name.split("-")[1])


def slice_outputs(scratch: str, piece: Slice, files: list[str] | None = None) -> Any:
    """The outputs the actors wrote for one slice, in row order (one row per input row).
    ``files``: their names, as the actors reported them (None: found by listing the folder)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    folder = RootFolder(scratch)
    if files is None:
        files = [n for n in folder.names() if n.startswith("out-") and slice_of(n) == piece.index]
    if not files:
        raise RuntimeError(f"slice {piece.index}: the model actors wrote no outputs")
    table = pa.concat_tables([folder.read_table(f) for f in sorted(files)]).combine_chunks()
    table = table.take(pc.sort_indices(table, [(ORDER, "ascending")]))
    order = table.column(ORDER).to_numpy()
    if len(order) and len(np.unique(order)) != len(order):  # a retried batch cut differently
        keep = np.concatenate([[True], order[1:] != order[:-1]])
        table = table.filter(pa.array(keep))
    if table.num_rows != piece.rows:
        raise RuntimeError(f"slice {piece.index}: {table.num_rows} outputs for {piece.rows} rows")
    return table.drop_columns([ORDER])


def finish_slice(payload: bytes, piece: Slice, scratch: str, files: list[str] | None = None) -> dict:
    """The CPU task after the actors: the slice's outputs (None for an empty slice) handed to the
    stage's ``finish``."""
    from ray import cloudpickle

    finish = cloudpickle.loads(payload)
    return finish(piece, slice_outputs(scratch, piece, files) if piece.rows else None, read_model(scratch))


def read_model(scratch: str) -> dict:
    """The model's description an actor wrote ({} when the stage has none)."""
    found = RootFolder(scratch).read_bytes(MODEL_FILE)
    return json.loads(found) if found else {}


def run_pooled(
    engine: Any,
    location: Path | str,
    stage: ModelStage,
    pool: ModelPool,
    finish: Callable[[Slice, Any, dict], dict],
    scratch_root: Path | str,
) -> PoolRun:
    """``stage`` over the partition at ``location`` on the engine's Ray cluster: decode tasks, the
    pool of model actors writing their outputs under ``scratch_root``, then ``finish(slice,
    outputs, model)`` as one CPU task per slice (it writes the slice's part and returns a small
    dict). The scratch folder is removed afterwards, whatever happened.

    ``location`` and ``scratch_root`` are local paths, or URIs on the storage root's object store
    (with the root's query: :func:`refinery.engine.slices.slice_location`), which every actor and
    task opens itself; the driver sees only the names of the files the actors wrote."""
    import ray
    from ray import cloudpickle

    started = time.perf_counter()
    engine.connect()
    pool = fit_actor(pool, alive_nodes())  # an actor's CPUs cut to what one node has
    slices = plan_slices(location, engine.slice_rows)
    scratch = RootFolder.of(scratch_root).sub(f"pool-{uuid.uuid4().hex[:12]}").make()
    payload = cloudpickle.dumps(stage)
    filled = [s for s in slices if s.rows]
    reports: list[dict] = []
    finishing = cloudpickle.dumps(finish)  # one object: the runner sends it to the store once
    in_task: dict[int, dict] = {}  # slices finished in their model task (the warm-task path)
    shape: dict = {"cpus_per_actor": pool.cpus_per_actor, "decode_cpus": pool.decode_cpus}
    try:
        if filled and not pool.num_gpus and getattr(engine, "dispatch", "") == "tasks":  # CPU: warm tasks
            reports = model_reports(filled, payload, scratch.name, pool, PoolActor, decode_slices, finishing)
            in_task = {int(r["slice"]): r["part"] for r in reports}
        elif filled:  # GPUs (or dispatch "actors"): model actors fed by decode tasks
            reports, used = actor_reports(filled, payload, pool, PoolActor, (scratch.name,), decode_slices)
            shape = used.describe()
        loads: dict[str, int] = {}
        outputs: dict[int, set[str]] = {s.index: set() for s in slices}
        for r in reports:
            loads[r["worker"]] = max(loads.get(r["worker"], 0), int(r["loads"]))
            for name in json.loads(r["files"]):
                outputs[slice_of(name)].add(name)
        if not filled and stage.describe is not None:  # an empty partition: one task describes the model
            probe = ray.remote(num_cpus=pool.cpus_per_actor, num_gpus=pool.num_gpus or None)(describe_model)
            scratch.write_bytes(MODEL_FILE, json.dumps(ray.get(probe.remote(payload)), default=str).encode())
        model = read_model(scratch.name)
        runner, _ = engine.tasks()
        rest = [s for s in slices if s.index not in in_task]  # empty slices, or the actors' path
        finished = runner.map(
            finish_slice, [(finishing, s, scratch.name, sorted(outputs[s.index])) for s in rest]
        )
        done = {**in_task, **{s.index: part for s, part in zip(rest, finished, strict=True)}}
        parts = [done[s.index] for s in slices]
    finally:
        scratch.remove()
    return PoolRun(
        parts=parts,
        model=model,
        loads=loads,
        nodes=len({w.split(":")[0] for w in loads}),
        batches=sum(int(r.get("batches", 1)) for r in reports),
        seconds=time.perf_counter() - started,
        infer_seconds=float(sum(float(r["seconds"]) for r in reports)),
        slices=len(slices),
        pool={
            "actors": pool.actors,
            "num_gpus": pool.num_gpus,
            "batch_size": pool.batch_size,
            **{k: round(v, 3) if isinstance(v, float) else v for k, v in shape.items()},
        },
    )
