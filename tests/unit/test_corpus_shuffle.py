"""Corpus-wide dedup as shuffles over Parquet files: the same table as the in-memory pass, row for
row, at any number of pieces, reducers and component partitions; components by large-star /
small-star equal union-find; a step interrupted part-way resumes from its files."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.dedup import corpus_shuffle
from refinery.dedup.components import connected_components
from refinery.dedup.corpus_dedup import CorpusDedupParams, corpus_dedup
from refinery.dedup.corpus_shuffle import plan_pieces, shuffle_dedup, table_parts
from refinery.dedup.distributed_components import star_rounds, write_for_large_star
from refinery.dedup.marked_shuffle import TaskOutput, WorkDir, gather, node_partition
from refinery.engine.tasks import InProcessTasks
from refinery.sample import prose
from tests.s3_server import s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name


def _sources(seed: int = 5) -> dict[str, list[str]]:
    rng = random.Random(seed)
    base = [prose.article(rng, paragraphs=2) for _ in range(10)]
    chain = [base[0]]
    for _ in range(3):
        chain.append(prose.near_duplicate(chain[-1], rng, edits=2))
    return {
        "alpha": base[:6] + [base[1]] * 9 + chain[1:2],  # a bucket above max_bucket_all_pairs
        "beta": [prose.near_duplicate(t, rng, edits=1) for t in base[2:8]] + chain[2:],
        "gamma": [],
        "zeta": [*base[6:], base[0], base[3]],
    }


def _write(tmp_path, sources: dict[str, list[str]], group_rows: int) -> list[tuple[str, object]]:
    locations = []
    for source, texts in sorted(sources.items()):
        path = tmp_path / "in" / f"{source}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        table = pa.table({"id": [f"d{i}" for i in range(len(texts))], "text": pa.array(texts, pa.string())})
        pq.write_table(table, path, row_group_size=group_rows)
        locations.append((source, path))
    return locations


def _want(sources: dict[str, list[str]], params: CorpusDedupParams) -> pd.DataFrame:
    frames = [
        (s, pd.DataFrame({"id": [f"d{i}" for i in range(len(t))], "text": t}))
        for s, t in sorted(sources.items())
    ]
    table = corpus_dedup(frames, params).table
    return table.astype({"source": str, "id": str})


@pytest.mark.parametrize(("piece_rows", "workers", "max_bucket"), [(1_000, 1, 64), (3, 3, 4), (2, 2, 3)])
def test_the_shuffle_writes_the_in_memory_table_row_for_row(
    tmp_path, monkeypatch, piece_rows, workers, max_bucket
):
    sources = _sources()
    params = CorpusDedupParams(max_bucket_all_pairs=max_bucket, anchors=2)
    want = _want(sources, params)
    pieces = plan_pieces(_write(tmp_path, sources, 3), piece_rows)
    seconds: dict = {}
    plan, result = shuffle_dedup(
        pieces, params, InProcessTasks(), tmp_path / "work", workers, {"x": 1}, seconds
    )
    got = pd.concat([pq.read_table(p).to_pandas() for p in table_parts(plan)], ignore_index=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert (~got["kept"]).sum() >= 10
    in_memory = corpus_dedup(
        [
            (s, pd.DataFrame({"id": [f"d{i}" for i in range(len(t))], "text": t}))
            for s, t in sorted(sources.items())
        ],
        params,
    ).stats
    for figure in ("candidate_pairs", "verified_edges", "unverified_edges_dropped", "shared_buckets",
                   "large_buckets", "band_rows", "removed", "components"):  # fmt: skip
        assert result.stats[figure] == in_memory[figure], figure
    assert result.checks == {
        "rows": len(want),
        "repeated_keys": 0,
        "kept_rows_not_first_of_component": 0,
        "removed_rows_not_naming_the_kept_first": 0,
        "components_without_exactly_one_kept": 0,
    }
    if workers > 1:
        assert plan.reducers == workers and len(pieces) > len(sources)
    assert set(seconds) >= {"sign", "pairs", "join", "verify", "components", "owners", "table", "checks"}
    # band rows for one reducer more than the workers: a whole number per worker (2 each), none idle
    band_total = plan.documents * plan.params["bands"]
    monkeypatch.setattr(corpus_shuffle, "BAND_ROWS_PER_REDUCER", band_total // (workers + 1) + 1)
    assert corpus_shuffle.make_plan(pieces, params, tmp_path / "again", workers).reducers == 2 * workers


@pytest.mark.parametrize("seed", range(6))
def test_star_rounds_equal_union_find(tmp_path, seed):
    rng = np.random.default_rng(seed)
    n = 400
    a = rng.integers(0, n, 300)
    b = rng.integers(0, n, 300)
    chain = rng.permutation(n)[:60]  # a long path in shuffled order: many rounds for naive min-label
    a, b = np.concatenate([a, chain[:-1]]), np.concatenate([b, chain[1:]])
    keep = a != b
    a, b = a[keep], b[keep]
    want = connected_components(n, a, b)
    work = WorkDir(str(tmp_path / "w"))
    parts = 3
    for i in range(2):  # two senders, as verification tasks would be
        out = TaskOutput(work.step("edges"), i)
        half = slice(i, None, 2)
        write_for_large_star(out, a[half].astype(np.int64), b[half].astype(np.int64), parts)
        out.commit({})
    final, rounds = star_rounds(work, InProcessTasks(), "edges", parts)
    roots = np.arange(n)
    for k in range(parts):
        table = gather(work.step(final), k)
        if table is not None:
            roots[table.column("u").to_numpy()] = table.column("v").to_numpy()
    np.testing.assert_array_equal(roots, want)
    assert 1 <= rounds < 12


def test_node_partition_spreads_consecutive_ids():
    counts = np.bincount(node_partition(np.arange(10_000), 7), minlength=7)
    assert counts.min() > 1_200


def test_an_interrupted_step_resumes_from_the_committed_tasks(tmp_path, monkeypatch):
    sources = _sources()
    params = CorpusDedupParams()
    pieces = plan_pieces(_write(tmp_path, sources, 3), 4)
    calls = []
    real = corpus_shuffle.verify_task

    def dies_on_third(step, p, plan):
        calls.append(p)
        if len(calls) == 3:
            raise MemoryError("worker lost")
        return real(step, p, plan)

    monkeypatch.setattr(corpus_shuffle, "verify_task", dies_on_third)
    with pytest.raises(MemoryError):
        shuffle_dedup(pieces, params, InProcessTasks(), tmp_path / "work", 2, {}, {})
    signed = sorted((tmp_path / "work").glob("*/sign/sig/t-*"))
    assert len(signed) == len(pieces)
    stamps = [p.stat().st_mtime_ns for p in signed]
    monkeypatch.setattr(corpus_shuffle, "verify_task", real)
    ran = []
    monkeypatch.setattr(corpus_shuffle, "sign_task", lambda *a: ran.append(a) or {})
    plan, _ = shuffle_dedup(pieces, params, InProcessTasks(), tmp_path / "work", 2, {}, {})
    assert ran == []  # the signatures were not computed again
    assert [p.stat().st_mtime_ns for p in signed] == stamps
    got = pd.concat([pq.read_table(p).to_pandas() for p in table_parts(plan)], ignore_index=True)
    pd.testing.assert_frame_equal(got, _want(sources, params), check_dtype=False)


def test_on_an_object_store_a_task_killed_mid_write_is_ignored_and_the_step_resumes(
    tmp_path, s3_root, monkeypatch
):
    """The shuffle under an s3:// root (moto): a verify task that wrote its edge files but died
    before its done marker leaves files no reader takes; the rerun skips every marked task (no
    signature computed again), reruns the rest, and the table tasks' parts (written in place in the
    table's folder) are the in-memory pass's rows."""
    from refinery.dedup import marked_shuffle
    from refinery.engine.root_folder import RootFolder
    from refinery.fs import child, listing

    sources = _sources()
    params = CorpusDedupParams()
    pieces = plan_pieces(_write(tmp_path, sources, 3), 9)
    work, table = child(s3_root, "_shuffle", "t"), child(s3_root, "table")
    calls = []
    real, commit = corpus_shuffle.verify_task, marked_shuffle.TaskOutput.commit

    def dies_before_its_marker(self, result):
        raise MemoryError("worker lost between its files and its marker")

    def dies_on_third(step, p, plan):
        calls.append(p)
        if len(calls) == 3:
            monkeypatch.setattr(marked_shuffle.TaskOutput, "commit", dies_before_its_marker)
        return real(step, p, plan)

    monkeypatch.setattr(corpus_shuffle, "verify_task", dies_on_third)
    with pytest.raises(MemoryError):
        shuffle_dedup(pieces, params, InProcessTasks(), work, 1, {}, {}, table_folder=table)
    monkeypatch.setattr(marked_shuffle.TaskOutput, "commit", commit)
    monkeypatch.setattr(corpus_shuffle, "verify_task", real)
    (run,) = [i.base_name for i in listing(RootFolder(work).fs, RootFolder(work).path)]
    verify = RootFolder(child(work, run, "verify"))
    written = listing(verify.fs, verify.path, recursive=True)
    attempts = {
        i.base_name.split(".")[1] for i in written if "/to-" in i.path and i.base_name.startswith("t-")
    }
    done = set(marked_shuffle.done_attempts(verify).values())
    assert len(done) == 2 and len(attempts - done) == 1  # the dead attempt's files, unmarked
    ran = []
    monkeypatch.setattr(corpus_shuffle, "sign_task", lambda *a: ran.append(a) or {})
    _, result = shuffle_dedup(pieces, params, InProcessTasks(), work, 1, {}, {}, table_folder=table)
    assert ran == []  # the signatures were not computed again
    store = RootFolder(table)
    assert [p.rpartition("/")[2] for p in result.parts] == sorted(store.names())
    got = pd.concat(
        [pq.read_table(p, filesystem=store.fs).to_pandas() for p in result.parts], ignore_index=True
    )
    pd.testing.assert_frame_equal(got, _want(sources, params), check_dtype=False)


class _Recording(InProcessTasks):
    """In-process tasks, recording the order each map hands them out (task numbers)."""

    def __init__(self):
        super().__init__()
        self.order: dict[str, list[int]] = {}

    def map(self, fn, args):
        self.order.setdefault(fn.__name__, []).extend(a[1] for a in args)
        return super().map(fn, args)


def test_each_step_hands_out_its_largest_tasks_first(tmp_path):
    """Longest first (what Ray's queue then schedules on the first free worker): the signatures by
    the piece's text bytes, the per-piece steps by rows; the results still land by task number."""
    sources = _sources()
    sources["zeta"] = [t * 8 for t in sources["zeta"]]  # the last source's documents are the longest
    pieces = plan_pieces(_write(tmp_path, sources, 3), 4)
    runner = _Recording()
    plan, _ = shuffle_dedup(pieces, CorpusDedupParams(), runner, tmp_path / "work", 2, {}, {})
    by_bytes = sorted(range(len(pieces)), key=lambda i: -pieces[i].bytes)
    assert runner.order["sign_task"] == by_bytes != list(range(len(pieces)))
    assert pieces[by_bytes[0]].source == "zeta"
    assert runner.order["table_task"] == sorted(range(len(pieces)), key=lambda i: -pieces[i].rows)
    got = pd.concat([pq.read_table(p).to_pandas() for p in table_parts(plan)], ignore_index=True)
    pd.testing.assert_frame_equal(got, _want(sources, CorpusDedupParams()), check_dtype=False)
