"""A CPU model stage's model step as Ray tasks on warm workers, one slice per task.

:func:`refinery.engine.model_pool.run_pooled` runs a GPU pool as decode tasks ahead of long-lived
model actors (:mod:`refinery.engine.model_actors`). On GPUs that is the right shape (decoding runs
ahead, the GPU never waits). On CPUs it only adds fixed costs: a fresh actor process per model copy
paid by every stage run whatever its rows (RESULTS.md,
"Row stages on warm task workers"). Here, when the pool asks for no GPU, each filled slice is one task
(:func:`refinery.engine.slice_tasks.task_map`) that reads and decodes its rows and runs the model
over them in batches of ``batch_size``, on a worker process that loads the model once per run
(:class:`SliceModel`, built on the process's first slice and reused for the next). The pool's
``actors`` bounds the tasks at once, so no more model copies than asked for are in memory at once
(a worker that Ray replaces loads its own).

A task holds every output of its slice, so it also runs the stage's ``finish`` on them (the slice's
part written) in the same task: no output files in the scratch folder, read back by a second round
of ``finish`` tasks after a barrier (benchmarks/RESULTS.md, "Ingest, embeddings and the corpus dedup
on 1 vs 2 Ray workers, seventh session"). The scratch folder gets only the model's description,
which :class:`refinery.engine.model_pool.PoolActor` writes (the empty slices' ``finish`` reads it).
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Callable
from typing import Any

from refinery.engine.slice_tasks import task_map


class SliceModel:
    """The model loaded once (a :class:`PoolActor` in this process); each call runs one slice."""

    def __init__(self, payload: bytes):
        from ray import cloudpickle

        from refinery.models import loads

        actor, self.decode, self.stage_payload, scratch, self.batch_size, finish = pickle.loads(payload)
        self.loads_before = loads.total()  # what this run loaded in this process, not earlier runs
        self.actor = actor(self.stage_payload, scratch)  # writes the model's description there
        self.finish = cloudpickle.loads(finish)
        describe = self.actor.stage.describe
        # as the finish tasks read it back from the actor's model file (JSON): the same types
        self.model = json.loads(json.dumps(describe(self.actor.model), default=str)) if describe else {}

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        """The slice's outputs computed batch by batch, kept here, and its part written by ``finish``."""
        import pyarrow as pa

        piece = pickle.loads(batch["slice"][0])
        frame = self.decode(batch, self.stage_payload)
        tables, seconds = [], 0.0
        for start in range(0, len(frame), self.batch_size):
            rows = frame.iloc[start : start + self.batch_size].reset_index(drop=True)
            began = time.perf_counter()
            tables.append(self.actor.outputs(rows))
            seconds += time.perf_counter() - began
        outputs = pa.concat_tables(tables).combine_chunks() if tables else None
        if outputs is not None and outputs.num_rows != piece.rows:
            raise RuntimeError(f"slice {piece.index}: {outputs.num_rows} outputs for {piece.rows} rows")
        part = self.finish(piece, outputs, self.model)
        return {
            "files": ["[]"],
            "worker": [self.actor.worker],
            "rows": [len(frame)],
            "loads": [int(self.actor.loads()) - self.loads_before],
            "seconds": [seconds],
            "batches": [len(tables)],
            "slice": [piece.index],
            "part": [part],
        }


def model_reports(
    slices: list[Any],
    stage_payload: bytes,
    scratch: str,
    pool: Any,
    actor: type,
    decode: Callable,
    finish: bytes,
) -> list[dict]:
    """The filled ``slices`` through the model as tasks (``pool.actors`` at once, each asking for
    the pool's CPUs per actor); one report per slice, its ``part`` being what ``finish`` (the
    stage's cloudpickled finish) returned. ``actor`` and ``decode`` are model_pool's ``PoolActor``
    and ``decode_slices`` (passed in: no import cycle)."""
    payload = pickle.dumps((actor, decode, stage_payload, scratch, pool.batch_size, finish))
    return task_map(SliceModel, payload, slices, pool.cpus_per_actor, in_flight=pool.actors)
