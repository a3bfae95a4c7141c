"""The selection as files and tasks (refinery.sft.selection_plan) decides what the in-memory
selection decides on the same embeddings, however the rows are cut into files and reducers, and
with k-means fitted on a sample smaller than the partition."""

import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from refinery.engine.slices import Slice, processing
from refinery.engine.tasks import InProcessTasks
from refinery.sft.select import SelectionParams, select
from refinery.sft.selection_decisions import PieceDecisions
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
    ("within", "sample_rows", "workers", "cuts", "slices"),
    [
        ("random", 100_000, 1, [400], []),
        ("quality", 300, 3, [100, 101, 555], [250, 250, 500]),  # an empty slice among them
        ("centroid", 250, 4, [7, 300], list(range(97, 787, 97))),
    ],
)
def test_files_and_tasks_decide_as_in_memory(tmp_path, within, sample_rows, workers, cuts, slices):
    x, _ = blobs()
    quality = np.random.default_rng(1).random(len(x))
    quality[::5] = np.nan
    params = SelectionParams(
        budget_fraction=0.2, n_clusters=9, within_cluster=within, kmeans_sample_rows=sample_rows, seed=3
    )
    want = select(x, quality, params)
    folder = new_plan_folder(tmp_path, "s")
    _write(folder, x, quality, cuts)
    pieces = np.diff([0, *slices, len(x)]).tolist()  # the rows of each slice the stage writes
    plan = plan_selection(folder, params, InProcessTasks(), workers, pieces)
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
    ids = pd.Series([f"r{i}" for i in range(len(x))])
    # A worker writing slice i reads slice i's decisions only (one file per slice, in row order),
    # a batch at a time; a process writing the whole partition reads every record's once.
    start, worker = 0, PieceDecisions(folder)  # one worker's copy, reused for every slice (warm)
    for index, rows in enumerate(pieces):
        before = worker.read
        with processing(Slice(index, "f", (), rows)):
            for lo in range(start, start + rows, 64):
                decided = worker.take(ids[lo : min(lo + 64, start + rows)])
                assert decided["keep"].tolist() == want.keep[lo : lo + len(decided)].tolist()
        assert worker.read - before == rows  # its slice's records, not the partition's
        start += rows
    whole = PieceDecisions(folder)
    assert whole.take(ids)["cluster"].tolist() == want.labels.tolist() and whole.read == len(x)
    wrong = pytest.raises(RuntimeError, match="record 'r1' is for 'r0'")
    with processing(Slice(0, "f", (), pieces[0])), wrong:
        PieceDecisions(folder).take(ids[1:3])  # a row decided by another's decision: an error


def test_a_missing_batch_is_an_error_not_a_smaller_selection(tmp_path):
    x, _ = blobs()
    folder = new_plan_folder(tmp_path, "s")
    _write(folder, x, np.full(len(x), np.nan), [100])
    Path(embedded_files(folder)[0]).unlink()  # positions 0..99 lost: the sample is short
    with pytest.raises(RuntimeError, match="sample"):
        plan_selection(folder, SelectionParams(kmeans_sample_rows=50, n_clusters=4), InProcessTasks(), 1)


def test_an_empty_partition_has_one_empty_slice_of_decisions(tmp_path):
    folder = new_plan_folder(tmp_path, "s")
    plan = plan_selection(folder, SelectionParams(), InProcessTasks(), 2, [0])
    assert (plan.rows, plan.k, plan.pieces) == (0, 0, 1)
    decided = PieceDecisions(folder).take(pd.Series([], dtype=object))
    assert decided.empty and list(decided.columns) == ["cluster", "distance", "keep"]
