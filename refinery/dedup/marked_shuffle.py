"""Hash-partitioned shuffles written as Parquet on any storage root (a local folder or an object
store URI), step by step, each resumable from its files, committed by done markers, not renames.

An object store has no atomic rename, so a task cannot commit a folder by renaming it. Instead task
``i`` of step ``s`` writes every file straight under the step, named after its attempt
(``<s>/<stem>/t-<i>.<attempt>.parquet``; a scatter's stems are ``to-<k>``, one per destination that
gets rows; a task that spills several sorted chunks to one destination numbers them,
``t-<i>.<attempt>.<chunk>.parquet``), and then one small marker object,
``<s>/_done/t-<i>/<attempt>.json``, listing them with what the task returned (counts). The marker is
the commit point: readers take a task's files only from an attempt that has a marker, so a killed
attempt's leftovers are never read (and go with the work folder once the table is committed). Two
attempts of one task that both finish (a task Ray retried while the first still ran) write the same
rows; every reader takes the smallest attempt name, so all agree on one.

The reducer ``k`` of the next step lists ``<s>/to-<k>/`` and ``<s>/_done/`` (two listings, no
per-file lookups) and reads the marked files in task order. Rerun after a failure (a worker
killed, the Dagster step retried), a step runs only the tasks without a marker and reads the
others' results from their markers: finished work is never redone. The driver handles only task
numbers and these small dicts; workers get the step's name (a path, or a URI with its query),
never a filesystem object (:class:`refinery.engine.root_folder.RootFolder`).

On a local root the same scheme holds: files are written in place (no staging folder to rename)
and the marker is renamed into place, so local and object store runs share every line.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.engine.root_folder import RootFolder
from refinery.engine.tasks import TaskRunner
from refinery.fs import child, listing
from refinery.tempfiles import temp_path

DONE_DIR = "_done"
_MIX = np.uint64(0x9E3779B97F4A7C15)

__all__ = [
    "DONE_DIR",
    "TaskOutput",
    "WorkDir",
    "bucket_partition",
    "committed",
    "done_attempts",
    "gather",
    "node_partition",
    "scatter_groups",
    "task_files",
]


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


def node_partition(nodes: np.ndarray, parts: int) -> np.ndarray:
    """A node's partition among ``parts``: a multiplicative hash, so runs of ids spread evenly."""
    with np.errstate(over="ignore"):
        mixed = np.asarray(nodes, dtype=np.int64).view(np.uint64) * _MIX
    return ((mixed >> np.uint64(17)) % np.uint64(parts)).astype(np.int64)


def bucket_partition(buckets: np.ndarray, parts: int) -> np.ndarray:
    """A band bucket's reducer (the bucket is already a 64-bit hash)."""
    return (np.asarray(buckets, dtype=np.int64).view(np.uint64) % np.uint64(parts)).astype(np.int64)


def to_stem(k: int) -> str:
    return f"to-{k:08d}"


def _task_name(index: int, attempt: str, chunk: int | None = None) -> str:
    tail = "" if chunk is None else f".{chunk:05d}"
    return f"t-{index:08d}.{attempt}{tail}.parquet"


def _parse_task_name(name: str) -> tuple[int, str, int] | None:
    """(task, attempt, chunk) of ``t-<task>.<attempt>[.<chunk>].parquet`` (chunk 0 when absent);
    None for any other name."""
    if not name.startswith("t-") or not name.endswith(".parquet"):
        return None
    fields = name.removesuffix(".parquet").split(".")
    if len(fields) not in (2, 3) or not fields[0][2:].isdigit():
        return None
    chunk = fields[2] if len(fields) == 3 else "0"
    return (int(fields[0][2:]), fields[1], int(chunk)) if chunk.isdigit() else None


def _write(folder: RootFolder, relative: str, table: pa.Table, **options) -> str:
    """``table`` as one Parquet file at ``relative`` under ``folder``, written in place: the name
    carries the attempt, and nothing reads it before the attempt's marker lists it. ``options``
    go to :func:`pyarrow.parquet.write_table` (``row_group_size``: what a reader buffers)."""
    path = folder.file(relative)
    if folder.local:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, filesystem=folder.fs, **{"compression": "zstd", **options})
    return path


class TaskOutput:
    """The files of one attempt of one task, written in place, committed by its marker."""

    def __init__(self, step: str, index: int):
        self.step = RootFolder.of(step)
        self.index = index
        self.attempt = uuid.uuid4().hex[:16]
        self.files: dict[str, str] = {}  # stem -> path on the step's filesystem

    def write(self, stem: str, table: pa.Table, chunk: int | None = None, **options) -> str:
        """The task's file ``stem`` (``sig``, ``part``…); a task that spills several files to one
        stem numbers them (``chunk``). ``options`` as :func:`pyarrow.parquet.write_table`'s."""
        path = _write(self.step, f"{stem}/{_task_name(self.index, self.attempt, chunk)}", table, **options)
        self.files[stem if chunk is None else f"{stem}.{chunk:05d}"] = path
        return path

    def write_at(self, folder: RootFolder, name: str, stem: str, table: pa.Table) -> str:
        """A file of this attempt outside the step (a table's part written where it is committed);
        ``name`` must carry the attempt (:attr:`attempt`)."""
        if self.attempt not in name:
            raise ValueError(f"{name}: a file written in place must carry its attempt {self.attempt}")
        path = _write(folder, name, table)
        self.files[stem] = path
        return path

    def scatter(self, table: pa.Table, destination: np.ndarray, parts: int) -> None:
        """One ``to-<k>`` file per destination ``k`` that gets rows (rows keep their order)."""
        for k, rows in scatter_groups(table, destination, parts):
            self.write(to_stem(k), rows)

    def commit(self, result: dict) -> dict:
        """The marker, written last (one object, or a local file renamed into place)."""
        marker = json.dumps({"result": result, "files": self.files}, sort_keys=True).encode()
        name = f"{DONE_DIR}/t-{self.index:08d}/{self.attempt}.json"
        if self.step.local:  # renamed into place, not fsynced: scratch, as the files it lists
            target = Path(self.step.file(name))
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = temp_path(target)
            temp.write_bytes(marker)
            os.replace(temp, target)
        else:
            self.step.write_bytes(name, marker)
        return result


def done_attempts(step: str | RootFolder) -> dict[int, str]:
    """Each committed task's attempt (the smallest name where two committed): one listing."""
    folder = RootFolder.of(step)
    found: dict[int, str] = {}
    for info in listing(folder.fs, folder.file(DONE_DIR), recursive=True):
        name, parent = info.base_name, info.path.rsplit("/", 2)[-2]
        if info.type != pafs.FileType.File or name.startswith(".") or not name.endswith(".json"):
            continue  # a local marker's temporary, or a folder
        index, attempt = int(parent.removeprefix("t-")), name.removesuffix(".json")
        if index not in found or attempt < found[index]:
            found[index] = attempt
    return found


def read_marker(step: str | RootFolder, index: int, attempt: str) -> dict:
    folder = RootFolder.of(step)
    raw = folder.read_bytes(f"{DONE_DIR}/t-{index:08d}/{attempt}.json")
    if raw is None:
        raise FileNotFoundError(f"{folder.name}: task {index}'s marker {attempt} vanished")
    return json.loads(raw)


def task_files(step: str | RootFolder, index: int) -> dict[str, str]:
    """The files (stem -> path) of task ``index``'s committed attempt."""
    folder = RootFolder.of(step)
    attempt = done_attempts_of(folder, index)
    if attempt is None:
        raise FileNotFoundError(f"{folder.name}: task {index} has not committed")
    return read_marker(folder, index, attempt)["files"]


def done_attempts_of(folder: RootFolder, index: int) -> str | None:
    names = [
        i.base_name.removesuffix(".json")
        for i in listing(folder.fs, folder.file(f"{DONE_DIR}/t-{index:08d}"))
        if i.base_name.endswith(".json") and not i.base_name.startswith(".")
    ]
    return min(names) if names else None


def read_task_file(
    step: str | RootFolder, index: int, stem: str, columns: list[str] | None = None
) -> pa.Table:
    folder = RootFolder.of(step)
    return pq.read_table(task_files(folder, index)[stem], columns=columns, filesystem=folder.fs)


def committed(step: str | RootFolder, stem: str) -> list[tuple[int, int, str]]:
    """``(task, chunk, path)`` of every file the committed attempts wrote to ``stem`` (paths on the
    step's filesystem), in task and chunk order: two listings, no per-file lookups."""
    folder = RootFolder.of(step)
    valid = done_attempts(folder)
    found = []
    for info in listing(folder.fs, folder.file(stem)):
        parsed = _parse_task_name(info.base_name)
        if parsed is not None and valid.get(parsed[0]) == parsed[1]:
            found.append((parsed[0], parsed[2], info.path))
    return sorted(found)


def gather(step: str | RootFolder, k: int, columns: list[str] | None = None) -> pa.Table | None:
    """Every row the committed tasks of ``step`` sent to destination ``k``, in task order (None: none)."""
    folder = RootFolder.of(step)
    files = [path for _, _, path in committed(folder, to_stem(k))]
    if not files:
        return None
    return pa.concat_tables([pq.read_table(f, columns=columns, filesystem=folder.fs) for f in files])


@dataclass
class WorkDir:
    """The folder of one run's shuffle files (a local path or a URI with its query), named by what
    fixes its results (the inputs and the parameters), so a rerun over the same inputs resumes and
    any change starts afresh."""

    root: str

    def step(self, name: str) -> str:
        return child(self.root, name)

    def run(
        self,
        runner: TaskRunner,
        name: str,
        fn: Callable[..., dict],
        args: Sequence[tuple],
        costs: Sequence[float] | None = None,
    ) -> list[dict]:
        """Task ``i`` is ``fn(step, i, *args[i])``; tasks already committed are skipped. Returns
        every task's result, in order. ``costs`` (one per task, any unit): the tasks are handed to
        the runner largest first, so a runner that pulls (one task per free worker) ends the step
        with small tasks and no worker waits long on another's last large one."""
        step = RootFolder(self.step(name)).make()
        done = done_attempts(step)
        results: list[dict | None] = [
            read_marker(step, i, done[i])["result"] if i in done else None for i in range(len(args))
        ]
        todo = [i for i, r in enumerate(results) if r is None]
        if costs is not None:
            todo.sort(key=lambda i: -costs[i])  # stable: equal costs keep their order
        if todo:
            fresh = runner.map(fn, [(step.name, i, *args[i]) for i in todo])
            for i, r in zip(todo, fresh, strict=True):
                results[i] = r
        return [r for r in results if r is not None]

    def remove(self) -> None:
        RootFolder(self.root).remove()
