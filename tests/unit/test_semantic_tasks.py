"""Semantic dedup as shuffle steps (sample, assign, decide per cluster, collect) decides exactly as
the one-process plan, with claims from other partitions, pieces, chunks and several reducers."""

import dataclasses

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.dedup import semantic_tasks
from refinery.dedup.semantic import SemanticDeduper, SemanticDedupParams
from refinery.engine.root_folder import RootFolder
from refinery.engine.tasks import InProcessTasks
from refinery.names import SEMANTIC_DEDUPLICATED
from refinery.storage import Storage
from tests.semantic_partitions import UPSTREAM, corpus_vectors, write_partition


def _fields(decision) -> tuple:
    return tuple(dataclasses.asdict(decision).values())


def _storage(tmp_path) -> Storage:
    storage = Storage(tmp_path)
    vectors = corpus_vectors(seed=5, sizes=[90, 70, 110])
    for source, v in zip(["a", "b", "target"], vectors, strict=True):
        write_partition(storage, source, v)
    for source, keep_every in (("a", 7), ("b", 5)):  # earlier partitions' kept documents
        kept = pa.table({"id": [f"{source}-{i}" for i in range(len(vectors[0])) if i % keep_every]})
        out = storage.path(SEMANTIC_DEDUPLICATED, source)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(kept, out, row_group_size=9)
    return storage


@pytest.mark.parametrize("rule", ["semdedup", "first_come"])
def test_the_shuffle_decides_as_the_one_process_plan(tmp_path, monkeypatch, rule):
    storage = _storage(tmp_path)
    # small chunks and row groups: the reducers merge many sorted files, clusters spanning row groups
    monkeypatch.setattr(semantic_tasks, "SPILL_ROWS", 23)
    monkeypatch.setattr(semantic_tasks, "ROW_GROUP_ROWS", 5)
    params = SemanticDedupParams(rule=rule, docs_per_cluster=15, epsilon=0.05, kmeans_sample_rows=60)
    want = SemanticDeduper.for_partition(storage, UPSTREAM, "target", params, "cpu")
    got = semantic_tasks.distributed_deduper(
        storage, UPSTREAM, "target", params, InProcessTasks(), workers=3, slice_rows=32, measure=True
    )
    job = got.job
    assert len(job.pieces) == 4 and job.reducers == 3 and job.claim_sources == ["a", "b"]
    decided = {}
    for file in semantic_tasks.decision_files(job):
        for row in pq.read_table(file).to_pylist():
            decided[row["key"].removeprefix("target/")] = row
    plan = want.plan.decisions
    assert sorted(decided) == sorted(plan)
    for doc_id, d in plan.items():
        row = decided[doc_id]
        assert (row["cluster"], row["duplicate"], row["neighbour"], row["trigger"]) == (
            d.cluster, d.duplicate, d.neighbour, d.trigger
        ), doc_id  # fmt: skip
        assert np.allclose(
            [row["similarity"], row["nn_similarity"], row["trigger_similarity"], row["score"]],
            [d.similarity, d.nn_similarity, d.trigger_similarity, d.score],
            rtol=0, atol=1e-6,
        )  # fmt: skip
    removed = [d for d in plan.values() if d.duplicate]
    assert len(removed) > 10 and any(not d.neighbour.startswith("target/") for d in removed)
    # The applied rows and reasons are the same, and so is the metadata users compare.
    frame = storage.read(UPSTREAM, "target")
    a, b = want(frame), got(frame)
    pd.testing.assert_frame_equal(a.kept, b.kept)
    pd.testing.assert_frame_equal(a.rejected, b.rejected)
    report, want_report = got.report(), want.report()
    for key in want_report:
        if not key.endswith("seconds"):
            assert report[key] == want_report[key], key
    distributed = report["distributed"]
    assert distributed["tasks"] == {"sample": 4, "assign": 6, "decide": 3, "collect": 4}
    assert distributed["largest_cluster_rows"] >= max(want.plan.cluster_sizes)
    assert all(mb > 0 for mb in distributed["peak_rss_mb_per_task"].values())
    semantic_tasks.remove_work(storage, "target")
    assert not (storage.root / "_shuffle" / SEMANTIC_DEDUPLICATED / "target").exists()


def test_stale_embeddings_fail_naming_the_partition(tmp_path):
    storage = _storage(tmp_path)
    table = pq.read_table(storage.path(UPSTREAM, "target"))
    texts = table.column("text").to_pylist()
    texts[40] = "changed"
    pq.write_table(table.set_column(1, "text", pa.array(texts)), storage.path(UPSTREAM, "target"))
    with pytest.raises(ValueError, match=r"'target' is stale \(a document's text changed"):
        semantic_tasks.distributed_deduper(
            storage, UPSTREAM, "target", SemanticDedupParams(), InProcessTasks(), 1, slice_rows=32
        )
    pq.write_table(table.slice(1), storage.path(UPSTREAM, "target"))
    with pytest.raises(ValueError, match="it has 110 rows for 109 documents"):
        semantic_tasks.distributed_deduper(
            storage, UPSTREAM, "target", SemanticDedupParams(), InProcessTasks(), 1, slice_rows=32
        )


def test_clusters_are_merged_from_sorted_files_one_at_a_time(tmp_path):
    for i, clusters in enumerate([[0, 0, 2, 2, 2, 5], [1, 2, 2, 5, 5]]):
        pq.write_table(pa.table({"cluster": clusters, "v": [10 * i + j for j in range(len(clusters))]}),
                       tmp_path / f"{i}.parquet", row_group_size=2)  # fmt: skip
    got = [(c, sorted(t.column("v").to_pylist())) for c, t in
           semantic_tasks.clusters_of(sorted(tmp_path.glob("*.parquet")))]  # fmt: skip
    assert got == [(0, [0, 1]), (1, [10]), (2, [2, 3, 4, 11, 12]), (5, [5, 13, 14])]


def test_an_empty_partition_runs_no_task_and_reports_as_the_plan(tmp_path):
    storage = Storage(tmp_path)
    write_partition(storage, "empty", np.zeros((0, 8), np.float32))
    params = SemanticDedupParams()
    got = semantic_tasks.distributed_deduper(storage, UPSTREAM, "empty", params, InProcessTasks(), 2)
    want = SemanticDeduper.for_partition(storage, UPSTREAM, "empty", params, "cpu")
    report, want_report = got.report(), want.report()
    assert {k: report[k] for k in want_report if not k.endswith("seconds")} == {
        k: v for k, v in want_report.items() if not k.endswith("seconds")
    }
    assert got.figures.tasks == {} and semantic_tasks.decision_files(got.job) == []


class _Counting(InProcessTasks):
    """Runs tasks here and counts them per step."""

    def __init__(self):
        self.ran: dict[str, int] = {}

    def map(self, fn, args):
        self.ran[fn.__name__] = self.ran.get(fn.__name__, 0) + len(args)
        return super().map(fn, args)


def test_a_rerun_resumes_from_the_committed_tasks(tmp_path):
    storage = _storage(tmp_path)
    params = SemanticDedupParams(docs_per_cluster=15, kmeans_sample_rows=60)
    first = semantic_tasks.distributed_deduper(
        storage, UPSTREAM, "target", params, _Counting(), 2, slice_rows=32
    )
    want = [pq.read_table(f).to_pylist() for f in semantic_tasks.decision_files(first.job)]
    # A decide task's attempt that died before its marker (its file written, no marker), and the
    # collect step lost: the rerun runs only collect again, and never reads the dead attempt's file.
    decide = RootFolder(first.job.step("decide"))
    dead = decide.file("to-00000000/t-00000000.deadbeefdeadbeef.00000.parquet")
    pq.write_table(pq.read_table(semantic_tasks.sent_to(decide.name, 0)[0]).slice(0, 1), dead)
    RootFolder(first.job.step("collect")).remove()
    counting = _Counting()
    again = semantic_tasks.distributed_deduper(
        storage, UPSTREAM, "target", params, counting, 2, slice_rows=32
    )
    assert again.job.work == first.job.work and counting.ran == {"collect_task": 4}
    assert [pq.read_table(f).to_pylist() for f in semantic_tasks.decision_files(again.job)] == want
