"""Reading a split of a training schedule's shards: what every schedule consumer shares.

:class:`refinery.schedule.loader.ScheduleReader` (the fixed order) and
:class:`refinery.schedule.adaptive.AdaptiveReader` (the order that follows fed-back domain
weights) both find the split's row groups in position order with :func:`discover_row_groups`,
check their rank and worker with :func:`check_consumer`, fetch rows by position with
:class:`PositionReader` and build row dicts with :func:`row_maker`.
"""

from __future__ import annotations

import json
import keyword
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from refinery.fs import join, listing, split_root
from refinery.schedule.shards import INDEX_FILE, read_shard_meta

DEFAULT_COLUMNS = ("position", "step", "domain", "source", "id", "text")


@dataclass(frozen=True)
class RowGroup:
    path: str  # on ``filesystem``
    index: int
    first: int  # global position of its first row
    rows: int
    filesystem: Any = field(default=None, compare=False)  # a pyarrow.fs filesystem (None: local)


class ScheduleError(ValueError):
    pass


def discover_row_groups(root: Path | str, split: str) -> tuple[list[RowGroup], int, int, str | None]:
    """Row groups in position order, total documents, docs_per_step, schedule id (checked).
    ``root`` is storage/training_schedule: a local path or a :mod:`pyarrow.fs` URI (``s3://…``)."""
    filesystem, base = split_root(root)
    try:
        with filesystem.open_input_stream(join(base, "shards", INDEX_FILE)) as handle:
            index = json.loads(handle.read())
    except FileNotFoundError:
        raise ScheduleError(f"no schedule shards under {root}: materialize training_schedule first") from None
    if split not in index["splits"]:
        raise ScheduleError(f"the schedule has no split {split!r}; it has {sorted(index['splits'])}")
    folder = join(base, "shards", split)
    files = [
        i.path
        for i in listing(filesystem, folder)
        if i.base_name.startswith("shard-") and i.base_name.endswith(".parquet")
    ]
    if not files:
        if index["splits"][split]["documents"]:
            raise ScheduleError(f"the shards of split {split!r} are missing from {folder}")
        return [], 0, index["docs_per_step"], index["schedule_id"]  # a split with no documents
    groups, position = [], 0
    ident = steps = total = None
    for path in files:
        meta = read_shard_meta(path, filesystem)
        if ident is None:
            ident, steps, total = meta["schedule_id"], meta["docs_per_step"], meta["total"]
        if (meta["schedule_id"], meta["split"]) != (ident, split):
            raise ScheduleError(
                f"{path} belongs to another schedule or split: re-materialize training_schedule"
            )
        if meta["first_position"] != position:
            raise ScheduleError(
                f"{path} starts at {meta['first_position']}, expected {position}: a shard is missing"
            )
        md = pq.ParquetFile(path, filesystem=filesystem).metadata
        for i in range(md.num_row_groups):
            rows = md.row_group(i).num_rows
            groups.append(RowGroup(path, i, position, rows, filesystem))
            position += rows
    if position != total:
        raise ScheduleError(f"shards of {split!r} hold {position} documents, the schedule says {total}")
    return groups, position, steps, ident


def check_consumer(
    rank: int, world_size: int, docs_per_step: int, batch_size: int, worker: int, workers: int, start: int
) -> None:
    if world_size < 1 or not 0 <= rank < world_size:
        raise ScheduleError(f"rank {rank} is not in a world of {world_size}")
    if docs_per_step % world_size:
        raise ScheduleError(
            f"docs_per_step {docs_per_step} is not divisible by world_size {world_size}: "
            "re-materialize training_schedule with a global batch that is"
        )
    if batch_size < 1 or workers < 1 or not 0 <= worker < workers or start < 0:
        raise ScheduleError("batch_size, num_workers ≥ 1, 0 ≤ worker < num_workers, start_step ≥ 0")


class PositionReader:
    """Rows of a split by position, in any order. A row group that holds some is decoded once
    (only the columns asked for) into Python lists and kept, least recently used out past
    ``cache_bytes``: a consumer that jumps between a few fronts in the shards (the adaptive
    stream's domains) then pays one Arrow decode and one conversion per row group and front, and a
    list lookup per value."""

    def __init__(self, groups: list[RowGroup], columns: Sequence[str], cache_bytes: int = 256 << 20):
        self.groups = groups
        self.firsts = np.array([g.first for g in groups], dtype=np.int64)
        self.columns = list(columns)
        self.read_cols = list(dict.fromkeys(["position", *columns]))
        self.cache_bytes = cache_bytes
        self._cache: OrderedDict[int, tuple[list[list], int]] = OrderedDict()
        self._held = 0
        self._files: dict[str, pq.ParquetFile] = {}
        self.decoded_groups = 0  # row groups read from disk (a measure of read amplification)

    def _group(self, g: int) -> list[list]:
        hit = self._cache.get(g)
        if hit is not None:
            self._cache.move_to_end(g)
            return hit[0]
        group = self.groups[g]
        parquet = self._files.get(group.path)
        if parquet is None:
            parquet = self._files[group.path] = pq.ParquetFile(group.path, filesystem=group.filesystem)
        table = parquet.read_row_group(group.index, columns=self.read_cols)
        found = table.column(0).to_numpy()
        if not np.array_equal(found, np.arange(group.first, group.first + group.rows)):
            raise ScheduleError(f"{group.path} does not hold the positions its metadata says: re-materialize")
        self.decoded_groups += 1
        values = [table.column(c).to_pylist() for c in self.columns]
        size = table.nbytes + 64 * group.rows * len(self.columns)  # Python objects cost more than Arrow
        self._cache[g] = (values, size)
        self._held += size
        while self._held > self.cache_bytes and len(self._cache) > 1:
            _, (_, old) = self._cache.popitem(last=False)
            self._held -= old
        return values

    def take(self, positions: np.ndarray) -> list[list]:
        """The values of every column at ``positions`` (real positions, 0 ≤ p < N), in that order,
        one Python list per column."""
        positions = np.asarray(positions, dtype=np.int64)
        which = np.searchsorted(self.firsts, positions, side="right") - 1
        local = (positions - self.firsts[which]).tolist()
        if len(which) and (which == which[0]).all():
            cols = self._group(int(which[0]))
            return [[col[i] for i in local] for col in cols]
        groups, inverse = np.unique(which, return_inverse=True)
        parts = [self._group(int(g)) for g in groups]
        slots = inverse.tolist()
        return [[parts[j][c][i] for j, i in zip(slots, local, strict=True)] for c in range(len(self.columns))]


def row_maker(names: list[str]) -> Callable[..., dict]:
    """A function of one value per column returning the row's dict. For identifier names it is a
    dict display compiled once (about twice as fast as ``dict(zip(names, row))`` per row)."""
    if (
        names
        and all(n.isidentifier() and not keyword.iskeyword(n) for n in names)
        and len(set(names)) == len(names)
    ):
        args = ", ".join(names)
        body = ", ".join(f"{n!r}: {n}" for n in names)
        # Safe: the source is built only from names checked to be plain identifiers above.
        return eval(f"lambda {args}: {{{body}}}")
    return lambda *row: dict(zip(names, row, strict=True))


def resolve_rank(rank: int | None, world_size: int | None) -> tuple[int, int]:
    """A consumer's rank and world size: as given, else torch.distributed's when a process group is
    initialized, else rank 0 of 1 (what every torch-facing dataset of the schedule and the tokens asks)."""
    if rank is not None and world_size is not None:
        return rank, world_size
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if ready else 0 if rank is None else rank
    world_size = dist.get_world_size() if ready else 1 if world_size is None else world_size
    return rank, world_size
