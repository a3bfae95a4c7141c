"""The vector index: per-partition segments, replacement, exact = brute force, recall, crash safety."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.names import DOCUMENT_EMBEDDINGS as EMBEDDINGS_ASSET
from refinery.quality.embeddings import embeddings_schema
from refinery.retrieval import IndexParams, ModelMismatch, StaleSegment, VectorIndex
from refinery.retrieval.index import SEGMENTS_DIR
from refinery.storage import PROVENANCE_KEY, Storage

REPO = Path(__file__).resolve().parents[2]


def clustered(n: int, dim: int, seed: int, clusters: int = 20, spread: float = 0.35) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)
    x = centres[rng.integers(clusters, size=n)] + spread * rng.standard_normal((n, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings_file(
    storage: Storage,
    partition: str,
    vectors: np.ndarray,
    model: str = "test-model",
    prefix: str | None = None,
) -> list[str]:
    """A document_embeddings partition in the stored format (ids, text_hash, fixed-size float32 list)."""
    dim = vectors.shape[1]
    ids = [f"{prefix or partition}-{i}" for i in range(len(vectors))]
    schema = embeddings_schema(dim).with_metadata(
        {PROVENANCE_KEY: json.dumps({"model": model, "dim": dim, "normalized": True}).encode()}
    )
    table = pa.Table.from_arrays(
        [
            pa.array(ids, pa.string()),
            pa.array(["0" * 16] * len(ids), pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        ],
        schema=schema,
    )
    path = storage.path(EMBEDDINGS_ASSET, partition)
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, temp, row_group_size=257)  # several row groups, odd sizes
    os.replace(temp, path)  # as the stage writes: a new file, never rewritten in place
    return ids


def brute_force(parts: dict[str, np.ndarray], queries: np.ndarray, k: int) -> list[list[tuple[str, int]]]:
    """Global top-k over all partitions by cosine; ties by partition name then row."""
    names = sorted(parts)
    sims = np.concatenate([queries @ parts[p].T for p in names], axis=1)
    owner = [(p, r) for p in names for r in range(len(parts[p]))]
    out = []
    for row in sims:
        order = sorted(range(len(owner)), key=lambda j: (-row[j], owner[j]))[:k]
        out.append([owner[j] for j in order])
    return out


@pytest.fixture
def storage(tmp_path) -> Storage:
    return Storage(tmp_path / "storage")


@pytest.fixture
def index(tmp_path) -> VectorIndex:
    return VectorIndex(tmp_path / "index" / "vectors", "documents")


def test_exact_search_equals_brute_force_across_partitions_and_blocks(storage, index):
    parts = {
        p: clustered(n, 24, seed) for p, n, seed in (("news", 700, 1), ("forum", 333, 2), ("wiki", 5, 3))
    }
    for p, x in parts.items():
        write_embeddings_file(storage, p, x)
    assert index.sync(storage) == {"forum": "built", "news": "built", "wiki": "built"}
    queries = clustered(40, 24, 9)
    for segment in index.segments():  # small blocks so the running top-k crosses many block borders
        rows, scores = segment.exact_search(queries, 12, block_rows=64)
        finite = np.where(rows >= 0, scores, -9.0)
        assert rows.shape == (40, 12) and np.all(np.diff(finite, axis=1) <= 0)
        assert ((rows >= 0).sum(axis=1) == min(12, segment.rows)).all()
    hits = index.search(queries, 12, model="test-model", exact=True)
    expected = brute_force(parts, queries, 12)
    for q in range(len(queries)):
        got = hits[hits["query"] == q]
        assert list(zip(got["partition"], got["row"], strict=True)) == expected[q]
        assert list(got["id"]) == [f"{p}-{r}" for p, r in expected[q]]
        want = [float(queries[q] @ parts[p][r]) for p, r in expected[q]]
        np.testing.assert_allclose(got["score"].to_numpy(), want, rtol=0, atol=1e-5)
    # Fewer vectors than k in a partition: only real rows come back.
    small = index.search(queries[:1], 12, model="test-model", exact=True, partitions=["wiki"])
    assert sorted(small["row"]) == [0, 1, 2, 3, 4] and list(small["rank"]) == [1, 2, 3, 4, 5]


def test_approximate_recall_at_10_on_clustered_vectors(storage, index):
    parts = {"a": clustered(6000, 64, 1, clusters=60, spread=0.5), "b": clustered(4000, 64, 2, 40, 0.5)}
    for p, x in parts.items():
        write_embeddings_file(storage, p, x)
    index.sync(storage)
    queries = clustered(200, 64, 5, clusters=60, spread=0.5)
    truth = index.search(queries, 10, model="test-model", exact=True)
    approx = index.search(queries, 10, model="test-model")
    key = ["query", "partition", "row"]
    recall = len(approx[key].merge(truth[key])) / len(truth)
    assert recall >= 0.95, recall
    low = index.search(queries, 10, model="test-model", expansion=10)  # ef = k: a worse graph walk
    assert len(low[key].merge(truth[key])) / len(truth) <= recall


def test_update_replaces_a_partition_and_remove_forgets_it(storage, index):
    write_embeddings_file(storage, "news", clustered(300, 16, 1))
    write_embeddings_file(storage, "web", clustered(200, 16, 2))
    index.sync(storage)
    first = index.manifest("news")
    assert first.rows == 300 and first.model == "test-model" and first.dim == 16

    new = clustered(120, 16, 7)
    write_embeddings_file(storage, "news", new, prefix="v2")  # news re-materialized
    assert index.status(storage).set_index("partition").loc["news", "state"] == "stale"
    with pytest.raises(StaleSegment, match="news"):
        index.search(new[:2], 3, model="test-model")
    with pytest.raises(StaleSegment, match="news"):
        index.search(new[:2], 3, model="test-model", exact=True)
    assert index.sync(storage) == {"news": "rebuilt"}
    second = index.manifest("news")
    assert second.rows == 120 and second.segment != first.segment
    segments = sorted(p.name for p in (index.folder / SEGMENTS_DIR).iterdir())
    assert segments == sorted([second.segment, index.manifest("web").segment])  # the old one is gone
    hits = index.search(new[:5], 1, model="test-model", exact=True)
    assert list(hits["id"]) == [f"v2-{i}" for i in range(5)]
    assert not (index.search(new, 10, model="test-model")["id"].str.startswith("news-")).any()

    storage.path(EMBEDDINGS_ASSET, "web").unlink()  # the partition is gone from storage
    assert index.sync(storage) == {"web": "removed"}
    assert index.partitions() == ["news"] and not any(
        p.name.startswith("web-") for p in (index.folder / SEGMENTS_DIR).iterdir()
    )
    assert index.remove("news") and not index.remove("news") and index.partitions() == []


def test_empty_partition_and_half_precision_storage(storage, index):
    write_embeddings_file(storage, "empty", np.zeros((0, 8), np.float32))
    x = clustered(500, 32, 3)
    write_embeddings_file(storage, "full", x)
    index.update(storage, "empty")
    index.update(storage, "full", IndexParams(dtype="f16"))
    assert index.manifest("empty").rows == 0 and index.manifest("full").params["dtype"] == "f16"
    hits = index.search(x[:20], 1, model="test-model", partitions=["full"])
    assert (hits["row"].to_numpy() == np.arange(20)).all()  # half precision, still finds itself
    np.testing.assert_allclose(hits["score"], 1.0, atol=2e-3)
    assert index.search(np.ones((2, 8), np.float32), 3, model="test-model", partitions=["empty"]).empty
    with pytest.raises(ModelMismatch, match="several models"):
        index.model()  # dims 8 and 32 are not comparable


def test_a_mismatched_model_is_refused(storage, index):
    write_embeddings_file(storage, "a", clustered(50, 16, 1), model="model-one")
    index.sync(storage)
    with pytest.raises(ModelMismatch, match="model-one"):
        index.search(clustered(1, 16, 2), 3, model="model-two")
    with pytest.raises(ModelMismatch, match="dimension 8"):
        index.search(clustered(1, 8, 2), 3, model="model-one")
    write_embeddings_file(storage, "b", clustered(50, 16, 3), model="model-two")
    index.sync(storage)
    with pytest.raises(ModelMismatch, match=r"model-one.*model-two"):
        index.search(clustered(1, 16, 2), 3)
    assert len(index.search(clustered(1, 16, 2), 3, model="model-two", partitions=["b"])) == 3


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)], env=env, stdout=subprocess.PIPE, text=True, **kwargs
    )


def test_index_persists_across_processes(storage, index, tmp_path):
    parts = {"a": clustered(800, 32, 1), "b": clustered(400, 32, 2)}
    for p, x in parts.items():
        write_embeddings_file(storage, p, x)
    queries = clustered(10, 32, 4)
    np.save(tmp_path / "q.npy", queries)
    child = _python(f"""
        import json, numpy as np
        from refinery.retrieval import VectorIndex
        from refinery.storage import Storage
        index = VectorIndex({str(index.folder.parent)!r}, "documents")
        index.sync(Storage({str(storage.root)!r}))
        hits = index.search(np.load({str(tmp_path / "q.npy")!r}), 5, model="test-model")
        print(json.dumps(hits[["query", "partition", "id"]].values.tolist()))
    """)
    out, _ = child.communicate(timeout=120)
    assert child.returncode == 0
    here = VectorIndex(index.folder.parent, "documents")  # a fresh object: reads only the files
    assert here.partitions() == ["a", "b"]
    hits = here.search(queries, 5, model="test-model")
    assert hits[["query", "partition", "id"]].values.tolist() == json.loads(out)


def test_a_killed_build_leaves_the_previous_segment_visible(storage, index):
    old = clustered(300, 64, 1)
    write_embeddings_file(storage, "big", old)
    index.update(storage, "big")
    before = index.manifest("big")
    write_embeddings_file(storage, "big", clustered(30_000, 64, 2), prefix="new")
    child = _python(f"""
        from refinery.retrieval import IndexParams, VectorIndex
        from refinery.storage import Storage
        VectorIndex({str(index.folder.parent)!r}, "documents").update(
            Storage({str(storage.root)!r}), "big", IndexParams(expansion_add=256)
        )
    """)
    segments = index.folder / SEGMENTS_DIR
    deadline = time.monotonic() + 60
    while not any(p.name.startswith(".tmp-big-") for p in segments.iterdir()):
        assert child.poll() is None and time.monotonic() < deadline, (
            "the build ended before it could be killed"
        )
        time.sleep(0.01)
    time.sleep(0.3)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert child.returncode == -signal.SIGKILL
    assert any(p.name.startswith(".tmp-big-") for p in segments.iterdir())  # the half build is left...
    reader = VectorIndex(index.folder.parent, "documents")
    assert reader.manifest("big").segment == before.segment  # ...but never published
    hits = reader.search(old[:3], 1, model="test-model", allow_stale=True)
    assert list(hits["id"]) == ["big-0", "big-1", "big-2"]
    write_embeddings_file(storage, "big", clustered(500, 64, 4), prefix="newer")  # re-materialized again
    reader.update(storage, "big")
    assert [p.name for p in segments.iterdir()] == [reader.manifest("big").segment]  # leftovers cleaned
    assert reader.manifest("big").rows == 500


def test_a_first_build_killed_leaves_no_partition(storage, index):
    write_embeddings_file(storage, "first", clustered(30_000, 64, 3))
    child = _python(f"""
        from refinery.retrieval import IndexParams, VectorIndex
        from refinery.storage import Storage
        VectorIndex({str(index.folder.parent)!r}, "documents").update(
            Storage({str(storage.root)!r}), "first", IndexParams(expansion_add=256)
        )
    """)
    deadline = time.monotonic() + 60
    segments = index.folder / SEGMENTS_DIR
    while not (segments.is_dir() and any(segments.iterdir())):
        assert child.poll() is None and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(timeout=30)
    assert index.partitions() == [] and index.status(storage)["state"].tolist() == ["missing"]


def test_self_recall_and_disk_size(storage, index):
    x = clustered(2000, 32, 1)
    x[5] = x[4]  # an exact copy: finding either counts
    write_embeddings_file(storage, "a", x)
    index.update(storage, "a")
    assert index.self_recall("a", sample=500) >= 0.99
    assert index.disk_bytes("a") > 2000 * 32 * 4 and index.disk_bytes("missing") == 0


def test_filtered_graph_search_returns_only_allowed_rows(storage, index):
    x = clustered(3000, 32, 1)
    write_embeddings_file(storage, "a", x)
    index.update(storage, "a")
    segment = index.open("a")
    allowed = np.zeros(3000, dtype=bool)
    allowed[::3] = True
    rows, scores = segment.search(x[:300], 5, allowed=allowed)
    assert (rows >= 0).all() and allowed[rows].all()
    sims = x[:300] @ x[allowed].T
    nearest = np.flatnonzero(allowed)[sims.argmax(axis=1)]
    assert (rows[:, 0] == nearest).mean() >= 0.95
    np.testing.assert_allclose(
        scores[:, 0][rows[:, 0] == nearest], sims.max(axis=1)[rows[:, 0] == nearest], atol=1e-5
    )
