"""Independent tasks, run in this process or as Ray tasks on the cluster's workers.

A step of a shuffle (:mod:`refinery.dedup.marked_shuffle`) is a list of tasks that each read files,
write files and return a small dict of counts. :class:`InProcessTasks` runs them one after the
other here (the local engine); :class:`RayTasks` submits them as Ray tasks, one CPU each, which
Ray retries on another worker when the process running one dies (a task's outputs are committed
atomically under a name of its own, so a rerun rewrites or skips them). Only the small dicts come
back to the caller: the rows stay in the files.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from refinery.kernel.spec import Task, TaskRunner

__all__ = ["InProcessTasks", "RayTasks", "Task", "TaskRunner"]


@dataclass
class InProcessTasks:
    """Every task in this process, in order."""

    name: str = "local"

    def map(self, fn: Task, args: Sequence[tuple]) -> list[dict]:
        return [fn(*a) for a in args]


@dataclass
class RayTasks:
    """Every task as a Ray task (``cpus`` each), at most ``in_flight`` submitted at once; a task
    whose worker died is retried up to ``retries`` times by Ray. The caller has connected.

    Tasks are placed with Ray's ``SPREAD`` strategy. With the default one, every task that takes
    the shared plan (an object the driver put in its node's store) is leased where that object
    lives: on a loopback cluster of two 1-CPU nodes, 11 of the corpus dedup's 14 maps ran all their
    tasks in one process while the other node idled (benchmarks/RESULTS.md)."""

    cpus: float = 1.0
    retries: int = 4
    in_flight: int = 64
    name: str = "ray"
    # Per map: where its wall time went (see step_timings); kept for the caller's metadata/benchmarks.
    steps: list[dict] = field(default_factory=list)
    # Per map, when a list: every task's own clock (start, end, cpu, pid), for a benchmark's timeline.
    timeline: list[dict] | None = None

    def map(self, fn: Task, args: Sequence[tuple]) -> list[dict]:
        import ray

        def timed(*args: Any) -> tuple[Any, dict]:
            return _timed(fn, *args)

        timed.__name__ = timed.__qualname__ = getattr(fn, "__name__", "task")
        remote = ray.remote(
            num_cpus=self.cpus, max_retries=self.retries, retry_exceptions=False, scheduling_strategy="SPREAD"
        )(timed)
        submitted = time.time()
        results: list[Any] = [None] * len(args)
        pending: dict[Any, int] = {}
        queue = list(enumerate(args))
        stored: dict[int, Any] = {}

        def shared(value: Any) -> Any:
            """An argument every task shares (a plan) goes to the object store once, not per task."""
            if value is None or isinstance(value, str | int | float | bool):
                return value
            if id(value) not in stored:
                stored[id(value)] = ray.put(value)
            return stored[id(value)]

        try:
            while queue or pending:
                while queue and len(pending) < self.in_flight:
                    i, a = queue.pop(0)
                    pending[remote.remote(*(shared(v) for v in a))] = i
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    results[pending.pop(ref)] = ray.get(ref)
        except BaseException:
            stop_tasks(list(pending))
            raise
        step = getattr(fn, "__name__", str(fn))
        self.steps.append(step_timings(step, [t for _, t in results], submitted))
        if self.timeline is not None:
            self.timeline.append({"step": step, "submitted": submitted, "tasks": [t for _, t in results]})
        return [r for r, _ in results]


def stop_tasks(refs: list, grace_s: float = 30.0) -> None:
    """Cancel a failed map's tasks still running and wait until they have stopped.

    Why: the caller's failure ends its step, and its retry may start at once on the same files; a
    task of the failed attempt that finished afterwards would write over what the retry wrote
    (an ingest's part rewritten by its id fix, then its unfixed first reading renamed over it). A
    cancelled task gets a KeyboardInterrupt, so its open parts are discarded; one that does not
    stop within ``grace_s`` has its worker process killed."""
    import ray

    if not refs:
        return
    for ref in refs:
        ray.cancel(ref, force=False)
    _, running = ray.wait(refs, num_returns=len(refs), timeout=grace_s)
    for ref in running:
        ray.cancel(ref, force=True)
    if running:
        ray.wait(running, num_returns=len(running), timeout=grace_s)


def _timed(fn: Task, *args: Any) -> tuple[Any, dict]:
    """``fn(*args)`` with its wall span, CPU seconds and process (the worker that ran it)."""
    began, cpu = time.time(), time.process_time()
    result = fn(*args)
    return result, {"start": began, "end": time.time(), "cpu": time.process_time() - cpu, "pid": os.getpid()}


def step_timings(step: str, timings: list[dict], submitted: float) -> dict:
    """One map's wall time split: ``startup_s`` from its submission to the first task's start
    (worker processes started, the function and its imports loaded), ``work_s`` from there to the
    last task's end, ``drain_s`` to the results in hand; ``task_cpu_s`` summed; ``processes`` the
    worker processes that ran its tasks."""
    if not timings:
        return {"step": step, "tasks": 0}
    first, last = min(t["start"] for t in timings), max(t["end"] for t in timings)
    return {
        "step": step,
        "tasks": len(timings),
        "startup_s": round(first - submitted, 3),
        "work_s": round(last - first, 3),
        "drain_s": round(time.time() - last, 3),
        "task_s": round(sum(t["end"] - t["start"] for t in timings), 3),
        "task_cpu_s": round(sum(t["cpu"] for t in timings), 3),
        "processes": len({t["pid"] for t in timings}),
    }
