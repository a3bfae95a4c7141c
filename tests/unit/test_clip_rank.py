"""clip_filtered's top-fraction ranks from per-slice sketches and a range shuffle equal one sort of the
partition by (cosine descending, id): every rank, the cut's cosine, with ties at many cosines and
ranges cut between them (the Ray engine's run of the same steps: tests/ray/test_row_stages_on_ray.py)."""

from __future__ import annotations

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
