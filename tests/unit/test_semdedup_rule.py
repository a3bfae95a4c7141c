"""The paper's SemDeDup rule, exactly as the authors' code runs it, and claims streamed in blocks.

The reference below is facebookresearch/SemDeDup in numpy: a cluster's members sorted by cosine
distance to the centroid, descending (``keep_hard``), the full similarity matrix, its upper triangle,
column maxima M, removed where M ≥ 1 − ε. Our blocked implementation must agree with it exactly.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.dedup.semantic import (
    Claims,
    SemanticDeduper,
    SemanticDedupParams,
    StoredClaims,
    best_claims,
    plan,
    spherical_kmeans,
)
from refinery.names import DOCUMENT_EMBEDDINGS, SEMANTIC_DEDUPLICATED
from refinery.quality.embeddings import embeddings_schema
from refinery.storage import PROVENANCE_KEY, Storage


def unit(x):
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def near_copies(seed: int, n_topics: int = 6, per_topic: int = 25, dim: int = 32) -> np.ndarray:
    """Topics, each a spread of documents, some of them in tight groups of paraphrases (chains too)."""
    rng = np.random.default_rng(seed)
    rows = []
    for centre in unit(rng.normal(size=(n_topics, dim))):
        for _ in range(per_topic):
            doc = unit(centre + 0.6 * rng.normal(size=dim))
            rows.append(doc)
            for _ in range(rng.integers(0, 3)):  # 0-2 paraphrases, each a step from the previous
                doc = unit(doc + rng.uniform(0.02, 0.06) * rng.normal(size=dim))
                rows.append(doc)
    return np.stack(rows)[rng.permutation(len(rows))]


def authors_rule(vectors, centroid, epsilon) -> set[int]:
    """SemDeDup's sort_clusters.py + semdedup.py for one cluster, on the full matrix."""
    distance = 1 - vectors @ centroid
    order = sorted(range(len(vectors)), key=lambda i: (-distance[i], i))  # descending; ties: reading order
    reps = vectors[order]
    sim = reps @ reps.T
    np.fill_diagonal(sim, 0.0)
    triu = np.triu(sim, k=1)
    m = triu.max(axis=0)
    return {order[j] for j in np.flatnonzero(m >= 1 - epsilon)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_paper_rule_matches_the_authors_algorithm(seed):
    x = near_copies(seed)
    ids = [f"d{i}" for i in range(len(x))]
    params = SemanticDedupParams(clusters=6, epsilon=0.05, seed=seed)
    decided = plan("s", ids, x, Claims(), params)
    centroids, assign = spherical_kmeans(x, 6, params.kmeans_iterations, params.seed)
    expected = set()
    for c in range(centroids.shape[0]):
        members = np.flatnonzero(assign == c)
        if len(members):
            found = authors_rule(x[members], centroids[c].numpy(), params.epsilon)
            expected |= {int(members[i]) for i in found}
    removed = {int(i[1:]) for i, d in decided.decisions.items() if d.duplicate}
    assert removed == expected and 10 < len(removed) < len(x) // 2
    for e in (0.02, 0.05, 0.1):  # the table of other ε is the rule run again at that ε
        again = plan("s", ids, x, Claims(), params.model_copy(update={"epsilon": e}))
        assert decided.removed_at(e) == again.duplicates


def test_a_chain_is_removed_through_a_removed_member_and_names_the_kept_copy():
    """a–b and b–c are near copies, a–c is not: the paper's rule removes c for b even though b goes
    too; duplicate_of names a (what stays), similarity is cos(c, a), the reason says it came via b."""
    e = np.eye(4, dtype=np.float32)
    far = unit(e[0] - 0.2 * e[3])  # the furthest from the centroid: kept
    mid = unit(far + 0.3 * e[1])
    near = unit(mid + 0.3 * e[1])
    other = unit(e[3] + 0.5 * e[1])
    x = np.stack([near, mid, far, other])
    t = 0.95
    assert far @ mid >= t and mid @ near >= t and far @ near < t
    params = SemanticDedupParams(clusters=1, epsilon=1 - t)
    decided = plan("s", ["near", "mid", "far", "other"], x, Claims(), params)
    d = decided.decisions
    assert [d[i].duplicate for i in ("near", "mid", "far", "other")] == [True, True, False, False]
    assert d["mid"].neighbour == d["near"].neighbour == "s/far"
    assert d["near"].trigger == "s/mid" and d["near"].similarity == pytest.approx(float(near @ far), abs=1e-5)
    import pandas as pd

    frame = pd.DataFrame({"id": ["near", "mid", "far", "other"], "text": [""] * 4})
    rejected = SemanticDeduper(decided, params)(frame).rejected.set_index("id")
    assert rejected.loc["near", "duplicate_of"] == "s/far"
    assert "with s/mid" in rejected.loc["near", "reason_detail"]
    assert "s/mid is itself removed: its kept copy s/far" in rejected.loc["near", "reason_detail"]
    first = plan(
        "s", ["near", "mid", "far", "other"], x, Claims(), params.model_copy(update={"rule": "first_come"})
    )
    # Reading order, kept ones only: near stays (first), mid goes for it, far is compared with near only.
    assert [first.decisions[i].duplicate for i in ("near", "mid", "far")] == [False, True, False]


def test_exact_copies_keep_the_first_in_reading_order():
    rng = np.random.default_rng(3)
    x = unit(rng.normal(size=(10, 16)))
    x = np.concatenate([x, x[[2, 5]]])  # rows 10, 11 repeat rows 2 and 5
    decided = plan("s", [f"d{i}" for i in range(12)], x, Claims(), SemanticDedupParams(clusters=2))
    assert {i for i, d in decided.decisions.items() if d.duplicate} == {"d10", "d11"}


def write_partition(storage, name, ids, vectors, kept, model="m", dim=None):
    dim = dim or vectors.shape[1]
    meta = {PROVENANCE_KEY: json.dumps({"model": model, "dim": dim}).encode()}
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array(["h"] * len(ids)),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), dim),
        ],
        schema=embeddings_schema(dim).with_metadata(meta),
    )
    for asset, data in ((DOCUMENT_EMBEDDINGS, table), (SEMANTIC_DEDUPLICATED, pa.table({"id": kept}))):
        path = storage.path(asset, name)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(data, path, row_group_size=11)


def test_stored_claims_stream_in_blocks_and_equal_the_in_memory_scan(tmp_path):
    storage = Storage(tmp_path)
    rng = np.random.default_rng(5)
    mine = near_copies(7, n_topics=3, per_topic=10, dim=24)
    everything, keys = [], []
    for name in ("alpha", "beta", "gamma"):
        vectors = unit(mine[rng.integers(0, len(mine), 40)] + 0.05 * rng.normal(size=(40, 24)))
        ids = [f"{name}{i}" for i in range(40)]
        kept = [i for j, i in enumerate(ids) if j % 3]  # a subsequence, in order
        write_partition(storage, name, ids, vectors, kept)
        everything += [v for j, v in enumerate(vectors) if j % 3]
        keys += [f"{name}/{i}" for i in kept]
    write_partition(storage, "other_model", ["z"], unit(rng.normal(size=(1, 24))), ["z"], model="m2")
    write_partition(storage, "stale", ["s0", "s1"], unit(rng.normal(size=(2, 24))), ["s0", "gone"])
    stored = StoredClaims(storage, "me", "m", 24, block_rows=7)
    blocks = list(stored.blocks())
    assert all(len(k) <= 7 for k, _ in blocks) and sum(len(k) for k, _ in blocks) == len(keys) + 1
    assert stored.sources == {"alpha": 26, "beta": 26, "gamma": 26, "stale": 1}
    assert (
        "m2" in stored.skipped["other_model"]
        and "1 kept documents lack an embedding" in stored.skipped["stale"]
    )

    centroids, assign = spherical_kmeans(mine, 3, 25, 0)
    streamed = best_claims(
        StoredClaims(storage, "me", "m", 24, block_rows=7), mine, centroids, assign, 0.9, tile=4
    )
    memory = Claims(keys, np.stack(everything), block_rows=10**6)
    whole = best_claims(memory, mine, centroids, assign, 0.9)
    stale = [k for k, _ in blocks if k[0].startswith("stale")]
    assert stale == [["stale/s0"]]
    mask = np.array([k is None or not k.startswith("stale") for k in streamed.keys])
    np.testing.assert_allclose(streamed.similarity[mask], whole.similarity[mask], atol=1e-6)
    assert [k for k, m in zip(streamed.keys, mask, strict=True) if m] == [
        k for k, m in zip(whole.keys, mask, strict=True) if m
    ]
    assert streamed.compared == len(keys) + 1
