"""The selection as files and tasks (refinery.sft.selection_plan) decides what the in-memory
selection decides on the same embeddings, however the rows are cut into files and reducers, and
with k-means fitted on a sample smaller than the partition."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinery.engine.tasks import InProcessTasks
from refinery.sft.select import SelectionParams, select
from refinery.sft.selection_plan import (
    embedded_files,
    load_decisions,
    new_plan_folder,
    plan_selection,
    write_embedded,
)
from tests.unit.test_sft_select import blobs


def _write(folder, x, quality, cuts):
    frame = pd.DataFrame(
        {"id": [f"r{i}" for i in range(len(x))], "kind": "instruction", "dedup_text": "t", "quality": quality}
    )
    bounds = [0, *cuts, len(x)]
    for lo, hi in itertools.pairwise(bounds):
        write_embedded(folder / "embed", np.arange(lo, hi), frame.iloc[lo:hi], x[lo:hi])


@pytest.mark.parametrize(
    ("within", "sample_rows", "workers", "cuts"),
    [
        ("random", 100_000, 1, [400]),
        ("quality", 300, 3, [100, 101, 555]),
        ("centroid", 250, 4, [7, 300]),
    ],
)
def test_files_and_tasks_decide_as_in_memory(tmp_path, within, sample_rows, workers, cuts):
    x, _ = blobs()
    quality = np.random.default_rng(1).random(len(x))
    quality[::5] = np.nan
    params = SelectionParams(
        budget_fraction=0.2, n_clusters=9, within_cluster=within, kmeans_sample_rows=sample_rows, seed=3
    )
    want = select(x, quality, params)
    folder = new_plan_folder(tmp_path, "s")
    _write(folder, x, quality, cuts)
    plan = plan_selection(folder, params, InProcessTasks(), workers)
    got = load_decisions(folder)
    assert plan.tasks["reducers"] == min(workers, 9) and not embedded_files(folder)  # embeddings removed
    assert [got[f"r{i}"][2] for i in range(len(x))] == want.keep.tolist()
    assert [got[f"r{i}"][0] for i in range(len(x))] == want.labels.tolist()
    np.testing.assert_allclose([got[f"r{i}"][1] for i in range(len(x))], want.distances, rtol=1e-6)
    assert plan.sizes.tolist() == want.sizes.tolist() and plan.taken.tolist() == want.taken.tolist()
    assert plan.kinds_before == {"instruction": len(x)} and plan.kinds_after == {"instruction": want.budget}
    assert len(plan.examples) == int((plan.sizes > 0).sum())
    shown = plan.sample_ids  # the step's report reads only these decisions, never the partition's
    assert load_decisions(folder, shown) == {i: got[i] for i in shown}
    if sample_rows < len(x):  # fitted on the sample only
        assert len(plan.sample) <= sample_rows and len(shown) < len(got)


def test_a_missing_batch_is_an_error_not_a_smaller_selection(tmp_path):
    x, _ = blobs()
    folder = new_plan_folder(tmp_path, "s")
    _write(folder, x, np.full(len(x), np.nan), [100])
    Path(embedded_files(folder)[0]).unlink()  # positions 0..99 lost: the sample is short
    with pytest.raises(RuntimeError, match="sample"):
        plan_selection(folder, SelectionParams(kmeans_sample_rows=50, n_clusters=4), InProcessTasks(), 1)
