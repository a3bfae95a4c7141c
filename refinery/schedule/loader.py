"""Streaming a training schedule to PyTorch: exactly once, in order, across ranks and workers.

The schedule's shards (``storage/training_schedule/shards/<split>/``) hold a split's documents
in training order; position p belongs to optimizer step p // G (G = ``docs_per_step``, the
global batch in documents). The loader gives each consumer a disjoint part, so that together
they deliver every position exactly once:

- **Ranks** (distributed data parallel, R of them): step t's G documents are cut into R
  contiguous slices of m = G / R; rank r reads positions tG + rm … tG + rm + m − 1 of every
  step. G must be divisible by R. Rank r's own stream is those positions in increasing order.
- **DataLoader workers** (W per rank, batch size b): worker w makes the rank's batches w,
  w + W, w + 2W, … (batch j = rank-stream items jb … jb + b − 1). A ``DataLoader`` takes one
  item from each worker in turn, so what the training loop receives is the rank's stream in
  order, whatever W is.
- **Resume**: ``start_step`` skips every position before step ``start_step`` (rank-stream item
  start_step × m); the workers' batch count restarts there, so a resumed run sees exactly the
  tail of the uninterrupted one.

**The last step and DDP.** When N is not a multiple of G the last step is short, and ranks would
get different numbers of batches (G = 64, R = 8, N = 1,000: ranks 0–4 get 16 batches of 8, ranks
5–7 get 15): the ranks with more wait forever in a collective the others never join. So by
default (``last_step="pad"``) every rank gets the same number of batches: the last step is
padded so each rank's slice of it is as long as rank 0's (min(N mod G, m) items). A pad row
has ``is_pad=True`` (every row carries the flag in this mode), a *virtual* position ≥ N that no
real document has, the last step's ``step``, and a copy of a real document's other columns
(position (p − N) mod N), so a loop that forgot the flag still trains on real text; a loop
that masks pad rows out of the loss sees every real document exactly once. Padding, not
dropping, is the default because dropping loses up to G − 1 documents per split: harmless in
training, wrong for validation and test, and one default should be safe for both.
``last_step="drop"`` leaves the short step out (every rank the same count, fewer documents);
``"uneven"`` is the old behaviour (exactly once, no pads, ranks may differ; for single-process
evaluation). With one rank nothing is padded.

**Batches come from the dataset, not the DataLoader.** ``ScheduleDataset`` serves whole
batches (a :class:`ScheduleBatch`, the b rows collated) and the ``DataLoader`` must not batch
again: ``DataLoader(dataset, batch_size=None, num_workers=W)``, or ``dataset.loader(W)``. A
DataLoader ``batch_size`` would regroup rows across workers and silently change the order. The
refusal rests on torch's public dataset contract, not on its internals: ``ScheduleDataset`` is a
map-style ``Dataset`` whose item j is the rank's batch j. With ``batch_size=None`` the DataLoader
fetches ``dataset[j]``; with any ``batch_size`` (whatever the ``collate_fn``) it fetches a list of
indices through ``dataset.__getitems__``, which refuses, naming ``batch_size=None``, in the main
process and in every worker alike. (An ``IterableDataset`` cannot tell: torch's fetcher calls
``next()`` the same way in both modes and only the caller's frame would show the difference.
Marking the batch type cannot either: ``default_collate`` and ``default_convert`` treat a mapping
alike, and a custom ``collate_fn`` never looks.) The DataLoader hands index j to worker j mod W
(in order, its default), exactly the batches that worker's reader makes, so each worker streams
its batches as before; an index out of that order (a ``sampler``, ``shuffle=True``,
``in_order=False``) is refused with a clear error, since the ranks are split by the dataset.

A consumer reads only the row groups that hold some of its positions, and only the columns it
yields. :class:`ScheduleReader` is the part without torch (testable alone);
``ScheduleDataset`` (a ``torch.utils.data.IterableDataset``) adds the worker and rank discovery,
the batching and, with ``feedback=``, the adaptive stream of :mod:`refinery.schedule.adaptive`.
torch is imported when ``ScheduleDataset`` is first used, not when this module is.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq

from refinery.schedule.shard_reading import (
    DEFAULT_COLUMNS,
    PositionReader,
    RowGroup,
    ScheduleError,
    check_consumer,
    discover_row_groups,
    resolve_rank,
    row_maker,
)

PAD_FLAG = "is_pad"
LastStep = Literal["pad", "drop", "uneven"]
LAST_STEP_CHOICES = ("pad", "drop", "uneven")


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
        last_step: LastStep = "pad",
        transform: Callable[[dict], object] | None = None,
    ):
        self.root, self.split = root, split  # a local path or a pyarrow.fs URI (s3://…)
        self.groups, self.total, self.docs_per_step, self.schedule_id = discover_row_groups(self.root, split)
        check_consumer(rank, world_size, self.docs_per_step, batch_size, worker, num_workers, start_step)
        if last_step not in LAST_STEP_CHOICES:
            raise ScheduleError(f"last_step must be one of {LAST_STEP_CHOICES}, got {last_step!r}")
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.worker, self.num_workers, self.start_step = worker, num_workers, start_step
        self.last_step = last_step
        self.columns = [c for c in columns if c != PAD_FLAG]
        self.transform = transform
        g = self.docs_per_step
        self.per_rank = m = g // world_size
        self.full_steps, rest = divmod(self.total, g)
        # Real positions delivered: [0, end). In pad mode the short last step's slices are all
        # cut to pad_len items (rank 0's share); the positions ≥ N among them are pads.
        self.end = self.full_steps * g if last_step == "drop" else self.total
        self.pad_len = min(rest, m) if last_step == "pad" and rest else 0
        if world_size == 1:
            self.pad_len = 0  # one rank: nothing to equalise

    @property
    def padded(self) -> bool:
        """Whether rows carry the ``is_pad`` flag (``last_step="pad"``)."""
        return self.last_step == "pad"

    def _mine(self, positions: np.ndarray) -> np.ndarray:
        """Which of these (real or virtual) positions this consumer delivers."""
        g, m = self.docs_per_step, self.per_rank
        offset = positions % g - self.rank * m
        local = (positions // g) * m + offset  # index in the rank's stream
        rel = local - self.start_step * m
        delivered = (positions < self.end) | ((positions // g == self.full_steps) & (offset < self.pad_len))
        return (
            delivered
            & (offset >= 0)
            & (offset < m)
            & (rel >= 0)
            & ((rel // self.batch_size) % self.num_workers == self.worker)
        )

    def rank_count(self) -> int:
        """Items this rank delivers from start_step on (all its workers together, pads included)."""
        g, m = self.docs_per_step, self.per_rank
        if self.pad_len:
            items = self.full_steps * m + self.pad_len
        else:
            full, rest = divmod(self.end, g)
            items = full * m + min(max(rest - self.rank * m, 0), m)
        return max(items - self.start_step * m, 0)

    def num_batches(self) -> int:
        """Batches this rank delivers from start_step on (all its workers together)."""
        return -(-self.rank_count() // self.batch_size)

    def _pad_positions(self) -> np.ndarray:
        """This consumer's virtual positions (≥ N) in the short last step, in order."""
        if not self.pad_len or not self.total:
            return np.zeros(0, np.int64)
        virtual = np.arange(self.total, (self.full_steps + 1) * self.docs_per_step, dtype=np.int64)
        return virtual[self._mine(virtual)]

    def __iter__(self) -> Iterator:
        start = self.start_step * self.docs_per_step  # no position of an earlier step can be ours
        read_cols = list(dict.fromkeys(["position", *self.columns]))
        names = [*self.columns, PAD_FLAG] if self.padded else self.columns
        make_row = row_maker(names)
        flag = [itertools.repeat(False)] if self.padded else []
        by_file: dict[Path, list[RowGroup]] = {}
        for group in self.groups:  # the row groups holding any of our positions, per shard file
            if group.first + group.rows <= start or group.first >= self.end:
                continue
            if self._mine(np.arange(group.first, group.first + group.rows, dtype=np.int64)).any():
                by_file.setdefault(group.path, []).append(group)
        for path, groups in by_file.items():
            parquet = pq.ParquetFile(str(path), filesystem=groups[0].filesystem)
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
                rows = map(make_row, *values, *flag)
                yield from rows if self.transform is None else map(self.transform, rows)
        yield from self._pads(make_row)

    def _pads(self, make_row: Callable[..., dict]) -> Iterator:
        virtual = self._pad_positions()
        if not len(virtual):
            return
        values = PositionReader(self.groups, self.columns).take((virtual - self.total) % self.total)
        overrides = {"position": virtual.tolist(), "step": (virtual // self.docs_per_step).tolist()}
        for c, v in overrides.items():
            if c in self.columns:
                values[self.columns.index(c)] = v
        rows = map(make_row, *values, itertools.repeat(True))
        yield from rows if self.transform is None else map(self.transform, rows)

    def batches(self) -> Iterator[list]:
        """This consumer's batches (lists of rows): its rows cut every ``batch_size``. Exact,
        since only the rank's last batch can be short and it is this consumer's last."""
        rows = iter(self)
        while chunk := list(itertools.islice(rows, self.batch_size)):
            yield chunk


class ScheduleBatch(dict):
    """One batch from ``ScheduleDataset``: column name → the batch's values (collated), in
    schedule order. A type of its own so a training loop can tell the dataset's batches apart."""


def rebatching_error(dataset_batch: int, loader_batch: int | None = None) -> ScheduleError:
    got = f" (here batch_size={loader_batch})" if loader_batch not in (None, -1) else ""
    return ScheduleError(
        f"ScheduleDataset yields whole batches ({dataset_batch} rows each, in schedule order) and the "
        f"DataLoader must not batch them again{got}: use DataLoader(dataset, batch_size=None, "
        "num_workers=...) or dataset.loader(num_workers=...). A DataLoader batch_size regroups rows "
        "across workers and silently changes the training order; pass collate_fn to the dataset."
    )


def _passthrough(batch):
    """``collate_fn`` of ``ScheduleDataset.loader()``: the batch is collated already. (A DataLoader's
    default with ``batch_size=None``, ``default_convert``, would walk every value again.)"""
    return batch


def _define_dataset():
    import torch

    class ScheduleDataset(torch.utils.data.Dataset):
        """A split of a training schedule as a dataset of whole batches (item j: the rank's batch j,
        served in order; see the module docstring for why map-style).

        ``rank``/``world_size`` default to ``torch.distributed`` when it is initialised, else a
        single process. Iterate with ``DataLoader(dataset, batch_size=None, num_workers=W)`` or
        ``dataset.loader(num_workers=W)``; each item is a :class:`ScheduleBatch` of
        ``batch_size`` rows (fewer only in the rank's last batch), collated by ``collate_fn``
        (torch's ``default_collate`` by default: numbers become tensors, strings lists) after the
        per-row ``transform``; both must return a mapping. ``len()`` is the number of batches
        this rank yields (the same on every rank unless ``last_step="uneven"``).

        ``feedback``: the folder of an :class:`refinery.schedule.adaptive.OnlineDoremi` weight
        log; the stream then follows the domain weights the training loop feeds back (see that
        module), for ``steps`` steps (default: as many as the schedule has).
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
            last_step: LastStep = "pad",
            transform: Callable[[dict], Mapping] | None = None,
            collate_fn: Callable[[list], Mapping] | None = None,
            feedback: str | Path | None = None,
            steps: int | None = None,
        ):
            super().__init__()
            rank, world_size = resolve_rank(rank, world_size)
            self.options = {
                "root": str(root),
                "split": split,
                "rank": rank,
                "world_size": world_size,
                "batch_size": batch_size,
                "start_step": start_step,
                "columns": list(columns),
                "transform": transform,
            }
            if feedback is None:
                if steps is not None:
                    raise ScheduleError("steps= applies to the adaptive stream only (give feedback=)")
                self.options["last_step"] = last_step
            else:
                self.options |= {"feedback": str(feedback), "steps": steps}
            self.collate_fn = collate_fn
            self._probe_reader = self._reader()  # validates now, in the main process

        def _reader(self, worker: int = 0, workers: int = 1):
            # The dataset applies the transform itself (see _collate), so it can keep the pad flag.
            options = self.options | {"transform": None, "worker": worker, "num_workers": workers}
            if "feedback" in options:
                from refinery.schedule.adaptive import AdaptiveReader

                return AdaptiveReader(**options)
            return ScheduleReader(**options)

        def __getstate__(self) -> dict:
            """What a spawned worker receives: the options, not the main process's probe (whose
            domain index is one integer per document) nor its open stream."""
            return {k: v for k, v in self.__dict__.items() if k not in ("_probe_reader", "_stream")}

        @property
        def _probe(self):
            probe = self.__dict__.get("_probe_reader")
            if probe is None:
                probe = self.__dict__["_probe_reader"] = self._reader()
            return probe

        def __len__(self) -> int:
            return self._probe.num_batches()

        @property
        def num_documents(self) -> int:
            """Rows this rank yields (pads included)."""
            return self._probe.rank_count()

        @property
        def docs_per_step(self) -> int:
            return self._probe.docs_per_step

        @property
        def batch_size(self) -> int:
            return self.options["batch_size"]

        def loader(self, num_workers: int = 0, **kwargs) -> torch.utils.data.DataLoader:
            """A DataLoader that passes the dataset's batches through unchanged."""
            for name in ("batch_size", "collate_fn", "batch_sampler", "drop_last", "shuffle", "sampler"):
                if name in kwargs:
                    raise ScheduleError(f"{name} belongs to ScheduleDataset, not its DataLoader")
            return torch.utils.data.DataLoader(
                self, batch_size=None, num_workers=num_workers, collate_fn=_passthrough, **kwargs
            )

        def _collate(self, rows: list[dict]) -> ScheduleBatch:
            """The rows through ``transform`` and ``collate_fn``; ``is_pad`` is added back when
            they dropped it, so a padded batch always says which rows are pads."""
            transform = self.options["transform"]
            flags = [r[PAD_FLAG] for r in rows] if rows and PAD_FLAG in rows[0] else None
            items = rows if transform is None else [transform(r) for r in rows]
            out = (self.collate_fn or torch.utils.data.default_collate)(items)
            if not isinstance(out, Mapping):
                raise ScheduleError(
                    "ScheduleDataset's transform and collate_fn must produce a mapping (e.g. a dict of "
                    f"tensors), got {type(out).__name__}: a batch is a mapping of columns"
                )
            batch = ScheduleBatch(out)
            if flags is not None and PAD_FLAG not in batch:
                batch[PAD_FLAG] = torch.tensor(flags, dtype=torch.bool)
            return batch

        def __iter__(self) -> Iterator[ScheduleBatch]:
            """Every batch of this rank (a plain loop, no DataLoader)."""
            for rows in self._reader().batches():
                yield self._collate(rows)

        def __getitem__(self, index: int) -> ScheduleBatch:
            """The rank's batch ``index``, as a DataLoader with ``batch_size=None`` asks for it:
            this process (worker w of W) gets w, w + W, w + 2W, … and streams them from its
            reader; asking for w again starts a new pass (a new epoch)."""
            if not isinstance(index, int | np.integer):
                raise ScheduleError(f"ScheduleDataset items are batch numbers, got {index!r}")
            info = torch.utils.data.get_worker_info()
            worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
            stream = self.__dict__.get("_stream")
            if index == worker and (stream is None or stream[0] != index):
                stream = [index, iter(self._reader(worker, workers).batches())]
            expected = stream[0] if stream is not None else worker
            if index != expected:
                raise ScheduleError(
                    f"ScheduleDataset serves its batches in order and splits them across ranks itself; "
                    f"asked for batch {index} where batch {expected} comes next: leave the DataLoader's "
                    "sampler, shuffle and in_order unset (or use dataset.loader(num_workers=...))"
                )
            rows = next(stream[1], None)
            if rows is None:
                self.__dict__.pop("_stream", None)
                raise IndexError(f"batch {index} is past this rank's {len(self)} batches")
            stream[0] = index + workers
            self.__dict__["_stream"] = stream
            return self._collate(rows)

        def __getitems__(self, indices: list) -> list:
            """What a DataLoader with a ``batch_size`` calls (torch's public batched-fetch hook):
            refused, since the items are whole batches already."""
            raise rebatching_error(self.batch_size, len(indices))

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
