"""A stage's slices as Ray tasks on the job's warm worker processes (the ray engine's default dispatch).

Why not a pool of actors per stage run: measured on a loopback cluster (benchmarks/RESULTS.md,
"Row stages on warm task workers"), a fresh actor pool took 0.8–1.1 s before its first slice
began, whatever the rows, of which the actor's own ``__init__`` (the processor built) was only
0.06–0.22 s: the rest is a worker process started per actor, Ray imported there, and the actor
registered with the GCS and reported back. Every stage run paid it, and both sides of a 1 vs 2
worker comparison paid it, so it capped the end-to-end gain (with F fixed seconds and W seconds of
per-row work, (F + W) / (F + W/2)).

Ray keeps a job's task workers alive between tasks (one idle process per CPU), so slices sent as
tasks run on processes that have already started and imported the library. Each process builds
the stage's processor (or column function) **once per map**, on its first slice, and reuses it for
the slices that follow (:data:`_BUILT` holds one, keyed by the map's nonce, so a finished map's
processor, a model perhaps, is dropped before the next one is built and never reused by another
run). :func:`prestart` starts those processes while the driver builds its own processor and plans.

The slices are the same, processed by the same wrappers (``SliceActor`` and ``PartsActor`` of
:mod:`refinery.engine.ray_engine`), so the parts, markers, order and retry rules
are those of the actor path. A task whose worker process dies is retried by Ray (``retries``); an
exception raised by the stage comes back in its row, as with actors. Tasks that ask for GPUs do not
come here: a task worker may be handed a different GPU for its next task, so a model cached on one
would be on the wrong device; GPU stages keep their actors.
"""

from __future__ import annotations

import gc
import os
import pickle
import uuid
from typing import Any

#: The processor this worker process built for the map now running: ``(nonce, wrapper)``.
_BUILT: dict[str, Any] = {}


def run_slice(actor: type, nonce: str, payload: bytes, raw_slice: bytes) -> dict[str, list]:
    """One slice through ``actor(payload)``, built once per process and map (``nonce``)."""
    wrapper = _BUILT.get(nonce)
    if wrapper is None:
        if _BUILT:  # the previous map's processor goes before this one is built
            _BUILT.clear()
            gc.collect()
        wrapper = _BUILT[nonce] = actor(payload)
    return wrapper({"slice": [raw_slice]})


def warm() -> int:
    """Nothing but the imports a slice needs, so the process is ready when the first one comes."""
    import refinery.engine.slices  # pyarrow, pandas
    import refinery.kernel.execute  # noqa: F401  (the kernel the processors run in)

    return os.getpid()


def prestart(workers: int, cpus: float) -> list[Any]:
    """Start ``workers`` task processes (spread over the nodes) and have them import the library,
    without waiting: the driver builds its own processor and plans meanwhile. Returns the refs."""
    import ray

    remote = ray.remote(num_cpus=cpus, scheduling_strategy="SPREAD", max_retries=0)(warm)
    return [remote.remote() for _ in range(workers)]


def task_map(
    actor: type, payload: bytes, slices: list[Any], cpus: float, retries: int = 4, in_flight: int = 0
) -> list[dict]:
    """Every slice as a Ray task (``cpus`` each, spread over the nodes) through ``actor(payload)``;
    one row dict per slice, in the order they finished. ``in_flight`` caps the tasks submitted at
    once (0: four per worker CPU of the cluster, enough that a worker never waits for the driver)."""
    import ray

    remote = ray.remote(
        num_cpus=cpus, max_retries=retries, retry_exceptions=False, scheduling_strategy="SPREAD"
    )(run_slice)
    nonce = uuid.uuid4().hex
    shared = ray.put(payload)  # once in the object store, whatever the number of slices
    if in_flight <= 0:
        in_flight = max(4, 4 * int(ray.cluster_resources().get("CPU", 1) // max(cpus, 1e-9)))
    queue = [pickle.dumps(s) for s in reversed(slices)]
    pending: set[Any] = set()
    rows: list[dict] = []
    try:
        while queue or pending:
            while queue and len(pending) < in_flight:
                pending.add(remote.remote(actor, nonce, shared, queue.pop()))
            done, _ = ray.wait(list(pending), num_returns=1)
            pending.discard(done[0])
            out = ray.get(done[0])
            rows += [dict(zip(out, values, strict=True)) for values in zip(*out.values(), strict=True)]
    finally:
        for ref in pending:  # a task that failed for good (or an interrupt): the rest stop too
            ray.cancel(ref)
    return rows
