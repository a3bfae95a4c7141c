"""clip_filtered's ``top_fraction`` ranks computed by workers: no array the size of the partition anywhere.

The cut keeps the ``round(f · N)`` best pairs of the partition by ``(cosine descending, id)``, and
every row carries its exact rank (``clip_rank``, 1 = best), as when one process sorted them all.
Here a sort of the partition is a range-partitioned shuffle whose ranges come from quantile sketches:

1. **cosines** (one task per slice, :meth:`~refinery.kernel.spec.Engine.map_to_parts`): each slice's
   ``(id, clip_cosine)`` written as a part; its :class:`~refinery.quantiles.QuantileSketch` comes back.
2. The driver adds the sketches and reads ``R − 1`` splitters at the quantiles ``i/R``
   (``R = ⌈N / RANK_ROWS_PER_REDUCER⌉``): cosine ranges of about equal counts, best range first. A
   cosine's range follows from the splitters alone, so equal cosines share a range.
3. **scatter** (one task per slice): each row ``(cosine, id, slice, position)`` sent to its range.
4. **reduce** (one task per range): the range's rows sorted by ``(cosine descending, id)``, the
   local rank of each row sent back to its slice; the task returns its row count. The sorted cosines
   stay in a file, so the driver reads the one value at rank ``round(f · N)``: the exact cut.
5. The driver adds the ranges' counts into offsets (``R`` integers): a row's rank is its range's
   offset plus its local rank. The stage's own pass then reads, per slice, the ranks sent to it
   (slice-sized) and decides each row exactly as the one-process sort did.

Memory per task: one slice, or one range (``RANK_ROWS_PER_REDUCER`` rows of id and cosine); the
driver holds per-slice row counts, the sketch and ``R`` offsets. Rows that share one cosine all go
to one range (their order is by id), so a partition where millions of pairs share one cosine puts
them in one task. NaN cosines (clip_scored rejects unscored rows, so none reach here from it) rank
last, by id. Every step resumes from its files: a retried step skips the slices and tasks done
(:mod:`refinery.dedup.marked_shuffle`), and the folder goes once the stage's output is committed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from refinery.dedup.marked_shuffle import TaskOutput, WorkDir, gather, read_task_file
from refinery.engine.resume import data_version, fingerprint, scratch_folder, scratch_relative, under_root
from refinery.engine.root_folder import RootFolder
from refinery.fs import child
from refinery.quantiles import QuantileSketch
from refinery.storage import PartsWriter

RANK_ROWS_PER_REDUCER = 1_000_000  # about 40 MB of (cosine, id, slice, position) per reduce task
SKETCH_ACCURACY = 0.001
RANK_VERSION = 1  # bumped when the scratch files' layout changes
PLAN_KEY = "clip_rank_plan"  # the provenance stamp the workers read the plan from


@dataclass(frozen=True)
class RankPlan:
    """What the driver decided and every worker reads (stamped in the stage's provenance)."""

    scratch: str  # the scratch folder, relative to the storage root
    rows: int
    keep: int
    cutoff: float  # the cosine of the last row kept (inf: nothing kept)
    offsets: tuple[int, ...]  # per range: the rows of the better ranges
    slices: int

    def stamp(self) -> dict:
        return {
            "scratch": self.scratch,
            "rows": self.rows,
            "keep": self.keep,
            "cutoff": self.cutoff if math.isfinite(self.cutoff) else "inf",
            "offsets": list(self.offsets),
            "slices": self.slices,
        }

    @classmethod
    def from_stamp(cls, stamp: dict) -> RankPlan:
        cutoff = stamp["cutoff"]
        return cls(
            stamp["scratch"],
            int(stamp["rows"]),
            int(stamp["keep"]),
            math.inf if cutoff == "inf" else float(cutoff),
            tuple(int(o) for o in stamp["offsets"]),
            int(stamp["slices"]),
        )

    def reduce_step(self, storage) -> str:
        return child(str(under_root(storage, self.scratch)), "shuffle", "reduce")


# -- the tasks (run on the workers; each reads and writes files, returns a small dict) -----------
def cosine_columns(frame: pd.DataFrame) -> pa.Table:
    """Pass one's column function: the slice's ids and cosines as they are."""
    return pa.table(
        {
            "id": pa.array(frame["id"].astype(object), pa.string()),
            "clip_cosine": pa.array(frame["clip_cosine"].to_numpy(dtype=np.float32), pa.float32()),
        }
    )


def make_cosine_columns():
    return cosine_columns


def cosine_sketch(accuracy: float, part: pa.Table) -> dict:
    """A part's summary for the driver: the sketch of its cosines."""
    cosine = part.column("clip_cosine").to_numpy(zero_copy_only=False)
    return QuantileSketch.of(cosine.astype(np.float64), accuracy).to_dict()


def range_of(cosine: np.ndarray, splitters: np.ndarray) -> np.ndarray:
    """Each cosine's range, best first (``splitters`` ascending and distinct): the number of
    splitters above it; NaN goes to the last range."""
    ranges = len(splitters) - np.searchsorted(splitters, cosine, side="right")
    ranges[np.isnan(cosine)] = len(splitters)
    return ranges.astype(np.int64)


def scatter_task(step: str, index: int, parts: str, splitters: list[float]) -> dict:
    """Slice ``index``'s rows sent to their cosine ranges, with their position in the slice."""
    table = RootFolder.of(parts).read_table(PartsWriter.part_name(index))
    cosine = table.column("clip_cosine").to_numpy(zero_copy_only=False).astype(np.float32)
    rows = pa.table(
        {
            "clip_cosine": table.column("clip_cosine"),
            "id": table.column("id"),
            "slice": pa.array(np.full(table.num_rows, index, dtype=np.int32)),
            "position": pa.array(np.arange(table.num_rows, dtype=np.int32)),
        }
    )
    out = TaskOutput(step, index)
    bounds = np.asarray(splitters, dtype=np.float32)
    out.scatter(rows, range_of(cosine, bounds), len(splitters) + 1)
    return out.commit({"rows": table.num_rows})


def ranked_order(table: pa.Table) -> np.ndarray:
    """Row order by (cosine descending, id ascending), NaN cosines last: the one-process sort's."""
    cosine = table.column("clip_cosine").to_numpy(zero_copy_only=False).astype(np.float64)
    key = np.where(np.isnan(cosine), np.inf, -cosine)
    keyed = pa.table({"key": key, "id": table.column("id")})
    return pc.sort_indices(keyed, sort_keys=[("key", "ascending"), ("id", "ascending")]).to_numpy()


def reduce_task(step: str, index: int, scatter: str, slices: int) -> dict:
    """Range ``index``'s rows sorted; each row's local rank sent to its slice, the sorted cosines kept."""
    out = TaskOutput(step, index)
    table = gather(scatter, index)
    rows = 0 if table is None else table.num_rows
    if table is not None and rows:
        ordered = table.take(pa.array(ranked_order(table)))
        ranked = pa.table(
            {
                "position": ordered.column("position"),
                "range": pa.array(np.full(rows, index, dtype=np.int32)),
                "local_rank": pa.array(np.arange(1, rows + 1, dtype=np.int64)),
            }
        )
        out.scatter(ranked, ordered.column("slice").to_numpy(zero_copy_only=False).astype(np.int64), slices)
        out.write("sorted", ordered.select(["clip_cosine"]))
    return out.commit({"rows": rows})


def slice_ranks(reduce_step: str, index: int, rows: int, offsets: tuple[int, ...]) -> np.ndarray:
    """The exact ranks of slice ``index``'s rows, in row order (slice-sized)."""
    ranks = np.zeros(rows, dtype=np.int64)
    table = gather(reduce_step, index)
    got = 0 if table is None else table.num_rows
    if got != rows:
        raise RuntimeError(f"clip_filtered: slice {index} has {rows} rows but {got} ranks came back")
    if table is not None and rows:
        position = table.column("position").to_numpy(zero_copy_only=False)
        base = np.asarray(offsets, dtype=np.int64)[table.column("range").to_numpy(zero_copy_only=False)]
        ranks[position] = base + table.column("local_rank").to_numpy(zero_copy_only=False)
    return ranks


# -- the driver's plan ---------------------------------------------------------------------------
@dataclass
class RankRun:
    """The plan, where it is, and what the steps did (for the stage's metadata)."""

    plan: RankPlan
    folder: Path | str
    slice_rows: list[int]
    info: dict


def splitters_of(sketch: QuantileSketch, ranges: int) -> list[float]:
    """``ranges − 1`` cosines cutting the partition into ranges of about equal counts (ascending,
    distinct; fewer where the sketch's quantiles coincide)."""
    if ranges <= 1 or not sketch.count:
        return []
    values = sketch.quantiles([i / ranges for i in range(1, ranges)])
    return sorted({float(np.float32(v)) for v in values})


def plan_ranks(
    engine, storage, stage: str, source: str, location: Path | str, top_fraction: float, batch_rows: int
) -> RankRun:
    """Steps 1–4 on ``engine``'s workers (or in this process on the local engine), then the plan."""
    key = fingerprint(
        data_version(location), top_fraction, engine.slice_rows, RANK_ROWS_PER_REDUCER, RANK_VERSION
    )
    folder = scratch_folder(storage, stage, source, "ranks", key)
    parts_folder = child(str(folder), "cosines")
    parts = engine.map_to_parts(
        location,
        make_cosine_columns,
        ["id", "clip_cosine"],
        parts_folder,
        batch_rows,
        summarize=partial(cosine_sketch, SKETCH_ACCURACY),
    )
    sketch = QuantileSketch.merged((QuantileSketch.from_dict(p["summary"]) for p in parts), SKETCH_ACCURACY)
    slice_rows = [int(p["rows"]) for p in parts]
    rows = sum(slice_rows)
    splitters = splitters_of(sketch, max(1, math.ceil(rows / RANK_ROWS_PER_REDUCER)))
    runner, _ = engine.tasks()
    work = WorkDir(child(str(folder), "shuffle"))
    work.run(runner, "scatter", scatter_task, [(parts_folder, splitters)] * len(parts))
    reduced = work.run(
        runner, "reduce", reduce_task, [(work.step("scatter"), len(parts))] * (len(splitters) + 1)
    )
    counts = [int(r["rows"]) for r in reduced]
    offsets = tuple(int(o) for o in np.concatenate([[0], np.cumsum(counts)[:-1]]))
    keep = min(rows, round(top_fraction * rows))
    cutoff = _cosine_at(work.step("reduce"), counts, offsets, keep)
    plan = RankPlan(scratch_relative(stage, source, "ranks", key), rows, keep, cutoff, offsets, len(parts))
    info = {
        "slices": len(parts),
        "slices_reused": sum(bool(p.get("reused")) for p in parts),
        "ranges": len(counts),
        "largest_range_rows": max(counts, default=0),
        "sketch": sketch.describe(),
    }
    return RankRun(plan, folder, slice_rows, info)


def _cosine_at(reduce_step: str, counts: list[int], offsets: tuple[int, ...], rank: int) -> float:
    """The cosine of the row at global ``rank`` (1-based), read from its range's sorted file."""
    if rank <= 0:
        return math.inf
    where = int(np.searchsorted(np.asarray(offsets) + np.asarray(counts), rank, side="left"))
    cosines = read_task_file(reduce_step, where, "sorted", ["clip_cosine"]).column(0)
    return float(cosines[rank - offsets[where] - 1].as_py())


class SliceRanks:
    """Ranks handed out batch by batch: on a worker, for the slice it is processing; in the step
    (the local engine), for the rows in partition order, one slice's ranks loaded at a time."""

    def __init__(self, plan: RankPlan, reduce_step: str, slice_rows: list[int] | None = None):
        self.plan = plan
        self.reduce_step = reduce_step
        self.slice_rows = slice_rows  # the step's own pass: the slices' sizes, in order
        self._slice: int | None = None
        self._ranks = np.zeros(0, dtype=np.int64)
        self._at = 0

    def _load(self, index: int, rows: int) -> None:
        self._slice, self._at = index, 0
        self._ranks = slice_ranks(self.reduce_step, index, rows, self.plan.offsets)

    def take(self, n: int, piece=None) -> np.ndarray:
        """The next ``n`` rows' ranks; ``piece``: the slice being processed on a worker (None in
        the step, where slices follow each other)."""
        if piece is not None:
            if piece.index != self._slice or self._at >= len(self._ranks):
                self._load(piece.index, piece.rows)
            return self._next(n)
        chunks = []
        while n:
            if self._slice is None or self._at == len(self._ranks):
                following = 0 if self._slice is None else self._slice + 1
                if self.slice_rows is None or following >= len(self.slice_rows):
                    raise RuntimeError("clip_filtered: more rows than the ranked partition holds")
                self._load(following, self.slice_rows[following])
                continue
            chunk = self._next(n)
            chunks.append(chunk)
            n -= len(chunk)
        return np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)

    def _next(self, n: int) -> np.ndarray:
        chunk = self._ranks[self._at : self._at + n]
        self._at += len(chunk)
        return chunk
