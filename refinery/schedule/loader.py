"""Streaming a training schedule to PyTorch: exactly once, in order, across ranks and workers.

The schedule's shards (``storage/training_schedule/shards/<split>/``) hold a split's documents
in training order; position p belongs to optimizer step p // G (G = ``docs_per_step``, the
global batch in documents). The loader gives each consumer a disjoint part, so that together
they deliver every position exactly once:

- **Ranks** (distributed data parallel, R of them): step t's G documents are cut into R
  contiguous slices of m = G / R; rank r reads positions tG + rm … tG + rm + m − 1 of every
  step. G must be divisible by R. Rank r's own stream is those positions in increasing order.
- **DataLoader workers** (W per rank, batch size b): worker w takes the rank's batches w,
  w + W, w + 2W, … (batch j = rank-stream items jb … jb + b − 1). A ``DataLoader`` collects
  batches from its workers round robin, so what the training loop receives is the rank's stream
  in order, whatever W is — pass the same ``batch_size`` to both.
- **Resume**: ``start_step`` skips every position before step ``start_step`` (rank-stream item
  start_step × m); the workers' batch count restarts there, so a resumed run sees exactly the
  tail of the uninterrupted one.

The last step may be short (N not a multiple of G): its positions still go to the ranks whose
slices they fall in, so delivery stays exactly-once, and ranks may differ by up to m items;
``drop_last_step=True`` leaves that step out so every rank sees the same number.

A consumer reads only the row groups that hold some of its positions, and only the columns it
yields. :class:`ScheduleReader` is the part without torch (testable alone);
``ScheduleDataset`` (a ``torch.utils.data.IterableDataset``) adds the worker and rank discovery.
torch is imported when ``ScheduleDataset`` is first used, not when this module is.
"""

from __future__ import annotations

import json
import keyword
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from refinery.schedule.shards import INDEX_FILE, read_shard_meta, shard_dir

DEFAULT_COLUMNS = ("position", "step", "domain", "source", "id", "text")


@dataclass(frozen=True)
class _RowGroup:
    path: Path
    index: int
    first: int  # global position of its first row
    rows: int


class ScheduleError(ValueError):
    pass


def _discover(root: Path, split: str) -> tuple[list[_RowGroup], int, int, str | None]:
    """Row groups in position order, total documents, docs_per_step, schedule id (checked)."""
    index_path = root / "shards" / INDEX_FILE
    if not index_path.exists():
        raise ScheduleError(f"no schedule shards under {root}: materialize training_schedule first")
    index = json.loads(index_path.read_text())
    if split not in index["splits"]:
        raise ScheduleError(f"the schedule has no split {split!r}; it has {sorted(index['splits'])}")
    folder = shard_dir(root, split)
    files = sorted(folder.glob("shard-*.parquet")) if folder.is_dir() else []
    if not files:
        if index["splits"][split]["documents"]:
            raise ScheduleError(f"the shards of split {split!r} are missing from {folder}")
        return [], 0, index["docs_per_step"], index["schedule_id"]  # a split with no documents
    groups, position = [], 0
    ident = steps = total = None
    for path in files:
        meta = read_shard_meta(path)
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
        md = pq.ParquetFile(path).metadata
        for i in range(md.num_row_groups):
            rows = md.row_group(i).num_rows
            groups.append(_RowGroup(path, i, position, rows))
            position += rows
    if position != total:
        raise ScheduleError(f"shards of {split!r} hold {position} documents, the schedule says {total}")
    return groups, position, steps, ident


class ScheduleReader:
    """One consumer's part of a split of the schedule (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        start_step: int = 0,
        worker: int = 0,
        num_workers: int = 1,
        columns: Sequence[str] = DEFAULT_COLUMNS,
        drop_last_step: bool = False,
        transform: Callable[[dict], object] | None = None,
    ):
        self.root, self.split = Path(root), split
        self.groups, self.total, self.docs_per_step, self.schedule_id = _discover(self.root, split)
        if world_size < 1 or not 0 <= rank < world_size:
            raise ScheduleError(f"rank {rank} is not in a world of {world_size}")
        if self.docs_per_step % world_size:
            raise ScheduleError(
                f"docs_per_step {self.docs_per_step} is not divisible by world_size {world_size}: "
                "re-materialize training_schedule with a global batch that is"
            )
        if batch_size < 1 or num_workers < 1 or not 0 <= worker < num_workers or start_step < 0:
            raise ScheduleError("batch_size, num_workers ≥ 1, 0 ≤ worker < num_workers, start_step ≥ 0")
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.worker, self.num_workers, self.start_step = worker, num_workers, start_step
        self.columns = list(columns)
        self.transform = transform
        self.per_rank = self.docs_per_step // world_size
        self.end = (self.total // self.docs_per_step) * self.docs_per_step if drop_last_step else self.total

    def _mine(self, positions: np.ndarray) -> np.ndarray:
        """Which of these global positions this consumer delivers."""
        g, m = self.docs_per_step, self.per_rank
        offset = positions % g - self.rank * m
        local = (positions // g) * m + offset  # index in the rank's stream
        rel = local - self.start_step * m
        return (
            (positions < self.end)
            & (offset >= 0)
            & (offset < m)
            & (rel >= 0)
            & ((rel // self.batch_size) % self.num_workers == self.worker)
        )

    def rank_count(self) -> int:
        """Items this rank delivers from start_step on (all its workers together)."""
        g, m = self.docs_per_step, self.per_rank
        full, rest = divmod(self.end, g)
        items = full * m + min(max(rest - self.rank * m, 0), m)
        return max(items - self.start_step * m, 0)

    def __iter__(self) -> Iterator:
        start = self.start_step * self.docs_per_step  # no position of an earlier step can be ours
        read_cols = list(dict.fromkeys(["position", *self.columns]))
        make_row = _row_maker(self.columns)
        by_file: dict[Path, list[_RowGroup]] = {}
        for group in self.groups:  # the row groups holding any of our positions, per shard file
            if group.first + group.rows <= start or group.first >= self.end:
                continue
            if self._mine(np.arange(group.first, group.first + group.rows, dtype=np.int64)).any():
                by_file.setdefault(group.path, []).append(group)
        for path, groups in by_file.items():
            parquet = pq.ParquetFile(path)
            # The positions the chosen row groups must hold, in order: checked against the file.
            expected = np.concatenate([np.arange(g.first, g.first + g.rows, dtype=np.int64) for g in groups])
            seen = 0
            batches = parquet.iter_batches(
                batch_size=max(g.rows for g in groups),
                row_groups=[g.index for g in groups],
                columns=read_cols,
            )
            for batch in batches:
                found = batch.column(0).to_numpy()
                if not np.array_equal(found, expected[seen : seen + len(found)]):
                    raise ScheduleError(
                        f"{path} does not hold the positions its metadata says: re-materialize"
                    )
                seen += len(found)
                mine = self._mine(found)
                if not mine.all():
                    batch = batch.filter(mine)
                values = [batch.column(read_cols.index(c)).to_pylist() for c in self.columns]
                rows = map(make_row, *values)
                yield from rows if self.transform is None else map(self.transform, rows)
            if seen != len(expected):
                raise ScheduleError(f"{path} ended after {seen} of {len(expected)} expected rows")


def _row_maker(names: list[str]) -> Callable[..., dict]:
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


def _define_dataset():
    import torch

    class ScheduleDataset(torch.utils.data.IterableDataset):
        """A split of a training schedule as an ``IterableDataset``.

        ``rank``/``world_size`` default to ``torch.distributed`` when it is initialised, else a
        single process. Use ``DataLoader(dataset, batch_size=b, num_workers=W)`` with the same
        ``batch_size=b`` given here; each worker then reads only its own batches.
        """

        def __init__(
            self,
            root: str | Path,
            split: str = "train",
            batch_size: int = 1,
            start_step: int = 0,
            rank: int | None = None,
            world_size: int | None = None,
            columns: Sequence[str] = DEFAULT_COLUMNS,
            drop_last_step: bool = False,
            transform: Callable[[dict], object] | None = None,
        ):
            super().__init__()
            dist = torch.distributed
            if rank is None or world_size is None:
                ready = dist.is_available() and dist.is_initialized()
                rank = dist.get_rank() if ready else 0 if rank is None else rank
                world_size = dist.get_world_size() if ready else 1 if world_size is None else world_size
            self.options = {
                "root": str(root),
                "split": split,
                "rank": rank,
                "world_size": world_size,
                "batch_size": batch_size,
                "start_step": start_step,
                "columns": list(columns),
                "drop_last_step": drop_last_step,
                "transform": transform,
            }
            self._probe = ScheduleReader(**self.options)  # validates now, in the main process

        def __len__(self) -> int:
            return self._probe.rank_count()

        @property
        def docs_per_step(self) -> int:
            return self._probe.docs_per_step

        def __iter__(self):
            info = torch.utils.data.get_worker_info()
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            return iter(ScheduleReader(**self.options, worker=worker, num_workers=workers))

    ScheduleDataset.__module__ = __name__
    ScheduleDataset.__qualname__ = "ScheduleDataset"
    return ScheduleDataset


def __getattr__(name: str):
    """``ScheduleDataset`` is built (importing torch) on first access, then kept, so it pickles by
    reference for spawned DataLoader workers like any module-level class."""
    if name == "ScheduleDataset":
        cls = _define_dataset()
        globals()[name] = cls
        return cls
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
