"""clip_filtered's top-fraction ranks from per-slice sketches and a range shuffle equal one sort of the
partition by (cosine descending, id): every rank, the cut's cosine, with ties at many cosines and
ranges cut between them (the Ray engine's run of the same steps: tests/ray/test_row_stages_on_ray.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.local import LocalEngine
from refinery.engine.slices import plan_slices
from refinery.multimodal import clip_rank
from refinery.storage import Storage


def test_ranks_and_cut_equal_one_sort_of_the_partition(tmp_path, monkeypatch):
    monkeypatch.setattr(clip_rank, "RANK_ROWS_PER_REDUCER", 350)  # about nine ranges
    rng = np.random.default_rng(3)
    n = 3_000
    cosine = np.round(rng.normal(0.3, 0.15, n), 2).astype(np.float32)  # many ties
    cosine[:40] = 0.25  # a run of one value longer than some slices
    ids = [f"p{i:05d}" for i in rng.permutation(n)]
    path = tmp_path / "scored.parquet"
    pq.write_table(pa.table({"id": ids, "clip_cosine": cosine}), path, row_group_size=100)
    engine = LocalEngine()
    engine.slice_rows = 700

    run = clip_rank.plan_ranks(engine, Storage(tmp_path / "storage"), "clip_filtered", "s", path, 0.37, 256)

    order = sorted(range(n), key=lambda i: (-cosine[i], ids[i]))  # main's plan_filter
    want = np.empty(n, dtype=np.int64)
    want[order] = np.arange(1, n + 1)
    keep = round(0.37 * n)
    assert run.plan.rows == n and run.plan.keep == keep and run.plan.cutoff == float(cosine[order[keep - 1]])
    assert run.info["ranges"] >= 6 and run.info["largest_range_rows"] < n / 3
    reduce_step = run.plan.reduce_step(Storage(tmp_path / "storage"))
    in_step = clip_rank.SliceRanks(run.plan, reduce_step, run.slice_rows)
    got = np.concatenate([in_step.take(k) for k in (1, 699, 1300, 1000)])  # across slice boundaries
    np.testing.assert_array_equal(got, want)
    on_workers = clip_rank.SliceRanks(run.plan, reduce_step)
    pieces = plan_slices(path, engine.slice_rows)
    got = np.concatenate([on_workers.take(p.rows, p) for p in reversed(pieces)][::-1])
    np.testing.assert_array_equal(got, want)


def test_a_rerun_redoes_only_the_slices_and_ranges_without_a_marker(tmp_path):
    """What a retried step finds: the ranking's parts and tasks done before are not redone."""
    from refinery.engine.resume import marker_path
    from refinery.engine.tasks import InProcessTasks

    class Counting(InProcessTasks):
        def map(self, fn, args):
            calls.append((fn.__name__, len(args)))
            return super().map(fn, args)

    calls: list = []
    rng = np.random.default_rng(5)
    n = 900
    cosine = rng.uniform(-0.2, 0.7, n).astype(np.float32)
    path = tmp_path / "scored.parquet"
    pq.write_table(
        pa.table({"id": [f"q{i:04d}" for i in range(n)], "clip_cosine": cosine}), path, row_group_size=100
    )
    engine = LocalEngine()
    engine.slice_rows, engine.tasks = 300, lambda: (Counting(), 1)
    storage = Storage(tmp_path / "storage")
    first = clip_rank.plan_ranks(engine, storage, "clip_filtered", "s", path, 0.5, 256)
    assert calls == [("scatter_task", 3), ("reduce_task", len(first.plan.offsets))]
    marker_path(Path(first.folder) / "cosines", 1).unlink()  # slice 1 "killed" before its marker
    shutil.rmtree(Path(first.folder) / "shuffle" / "reduce" / "_done" / "t-00000000")  # and range 0
    calls.clear()
    again = clip_rank.plan_ranks(engine, storage, "clip_filtered", "s", path, 0.5, 256)
    assert again.plan == first.plan and again.info["slices_reused"] == 2
    assert calls == [("reduce_task", 1)]  # the scatter tasks had committed: not rerun
    ranks = clip_rank.SliceRanks(again.plan, again.plan.reduce_step(storage), again.slice_rows).take(n)
    assert sorted(ranks.tolist()) == list(range(1, n + 1))
