"""Hash-partitioned shuffles written as Parquet, step by step, each resumable from its files.

A step is a list of tasks (:mod:`refinery.engine.tasks`). Task ``i`` of step ``s`` writes its
files into a private temporary folder and renames it to ``<work>/<s>/t-<i>`` with a ``_done.json``
inside holding what the task returned (counts): the folder exists complete or not at all. A map
side writes one file per destination, ``to-<k>.parquet`` (none when it has no rows for ``k``); the
reducer ``k`` of the next step reads ``<work>/<s>/t-*/to-<k>.parquet``. Rerun after a failure (a
worker killed, the Dagster step retried), a step runs only the tasks whose folder is missing and
reads the others' results from their markers: finished work is never redone. The driver handles
only task numbers and these small dicts.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.tasks import TaskRunner

DONE = "_done.json"
_MIX = np.uint64(0x9E3779B97F4A7C15)


def task_dir(step: Path, index: int) -> Path:
    return step / f"t-{index:08d}"


def to_name(k: int) -> str:
    return f"to-{k:08d}.parquet"


def scatter_groups(table: pa.Table, destination: np.ndarray, parts: int) -> Iterator[tuple[int, pa.Table]]:
    """The rows of ``table`` grouped by their destination in ``[0, parts)``: one ``(k, rows)`` per
    destination that gets rows, rows in their order (what a shuffle task writes to each reducer)."""
    if not table.num_rows:
        return
    order = np.argsort(destination, kind="stable")
    sorted_dest = destination[order]
    bounds = np.flatnonzero(np.diff(sorted_dest)) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(order)]])
    for s, e in zip(starts, ends, strict=True):
        k = int(sorted_dest[s])
        if not 0 <= k < parts:
            raise ValueError(f"destination {k} outside [0, {parts})")
        yield k, table.take(pa.array(order[s:e]))


class TaskOutput:
    """The files of one task, written under a temporary folder and committed by one rename."""

    def __init__(self, step: Path, index: int):
        self.final = task_dir(step, index)
        self.temp = step / f".t-{index:08d}.{uuid.uuid4().hex}.tmp"
        self.temp.mkdir(parents=True, exist_ok=True)

    def path(self, name: str) -> Path:
        return self.temp / name

    def write(self, name: str, table: pa.Table) -> None:
        pq.write_table(table, self.temp / name, compression="zstd")

    def scatter(self, table: pa.Table, destination: np.ndarray, parts: int) -> None:
        """One ``to-<k>`` file per destination ``k`` that gets rows (rows keep their order)."""
        for k, rows in scatter_groups(table, destination, parts):
            self.write(to_name(k), rows)

    def commit(self, result: dict) -> dict:
        (self.temp / DONE).write_text(json.dumps(result, sort_keys=True))
        try:
            os.rename(self.temp, self.final)
        except OSError:  # a twin attempt of this task committed first: its files stand
            shutil.rmtree(self.temp, ignore_errors=True)
            return done_result(self.final)
        return result


def done_result(folder: Path) -> dict | None:
    marker = folder / DONE
    return json.loads(marker.read_text()) if marker.is_file() else None


def gather(step: Path, k: int, columns: list[str] | None = None) -> pa.Table | None:
    """Every row the map tasks of ``step`` sent to destination ``k``, in task order (None: none)."""
    files = sorted(step.glob(f"t-*/{to_name(k)}"))
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


def node_partition(nodes: np.ndarray, parts: int) -> np.ndarray:
    """A node's partition among ``parts``: a multiplicative hash, so runs of ids spread evenly."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(nodes, dtype=np.int64).view(np.uint64) * _MIX
    return ((mixed >> np.uint64(17)) % np.uint64(parts)).astype(np.int64)


def bucket_partition(buckets: np.ndarray, parts: int) -> np.ndarray:
    """A band bucket's reducer (the bucket is already a 64-bit hash)."""
    return (np.asarray(buckets, dtype=np.int64).view(np.uint64) % np.uint64(parts)).astype(np.int64)


@dataclass
class WorkDir:
    """The folder of one run's shuffle files, named by what fixes its results (the inputs and the
    parameters), so a rerun over the same inputs resumes and any change starts afresh."""

    root: Path

    def step(self, name: str) -> Path:
        return self.root / name

    def run(
        self, runner: TaskRunner, name: str, fn: Callable[..., dict], args: Sequence[tuple]
    ) -> list[dict]:
        """Task ``i`` is ``fn(step_folder, i, *args[i])``; tasks already committed are skipped.
        Returns every task's result, in order."""
        step = self.step(name)
        step.mkdir(parents=True, exist_ok=True)
        results: list[dict | None] = [done_result(task_dir(step, i)) for i in range(len(args))]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            fresh = runner.map(fn, [(str(step), i, *args[i]) for i in todo])
            for i, r in zip(todo, fresh, strict=True):
                results[i] = r
        for leftover in step.glob(".t-*.tmp"):  # attempts of tasks that died mid-write
            shutil.rmtree(leftover, ignore_errors=True)
        return [r for r in results if r is not None]

    def clear_from(self, name: str) -> None:
        shutil.rmtree(self.step(name), ignore_errors=True)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
