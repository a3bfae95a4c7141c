"""Batch-mode (corpus-wide) fuzzy dedup: union-find, candidate pairs, and known duplicate groups."""

import random
from collections import deque

import numpy as np
import pandas as pd
import pytest

from refinery.dedup.backends import open_fuzzy_index
from refinery.dedup.components import connected_components, keep_first
from refinery.dedup.corpus_dedup import (
    CorpusDedupParams,
    band_rows,
    candidate_pairs,
    corpus_dedup,
    verify_pairs,
)
from refinery.dedup.fuzzy import FuzzyDeduper
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.sample import prose


def bfs_components(n, edges):
    """Reference: the smallest member of each node's component, by breadth-first search."""
    adj = [[] for _ in range(n)]
    for a, b in edges:
        adj[a].append(b)
        adj[b].append(a)
    root = [-1] * n
    for start in range(n):
        if root[start] >= 0:
            continue
        seen, queue = [start], deque([start])
        root[start] = start
        while queue:
            for nxt in adj[queue.popleft()]:
                if root[nxt] < 0:
                    root[nxt] = start
                    seen.append(nxt)
                    queue.append(nxt)
    return np.array(root)


@pytest.mark.parametrize("seed", range(6))
def test_union_find_matches_breadth_first_search(seed):
    rng = random.Random(seed)
    n = rng.choice([1, 7, 50, 400])
    m = rng.choice([0, n // 2, n, 3 * n])
    edges = [(rng.randrange(n), rng.randrange(n)) for _ in range(m)]
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    assert np.array_equal(connected_components(n, a, b), bfs_components(n, edges))


def test_long_chain_in_shuffled_order_is_one_component_rooted_at_its_first_node():
    n = 5000
    order = np.random.default_rng(1).permutation(n - 1)
    roots = connected_components(n, order, order + 1)
    assert (roots == 0).all()


def test_keep_first_keeps_the_smallest_member_and_counts_sizes():
    roots = connected_components(6, np.array([4, 1, 5]), np.array([2, 4, 3]))
    assert roots.tolist() == [0, 1, 1, 3, 1, 3]
    kept, sizes = keep_first(roots)
    assert kept.tolist() == [True, True, False, True, False, False]
    assert sizes.tolist() == [1, 3, 3, 2, 3, 2]


def test_bad_edges_are_refused():
    with pytest.raises(ValueError, match="endpoints"):
        connected_components(3, np.array([0]), np.array([3]))


def test_candidate_pairs_all_pairs_in_small_buckets_anchors_in_large_ones():
    rows = pd.DataFrame(
        {
            "band": [0, 0, 0, 1, 1, 0] + [2] * 10,
            "bucket": [7, 7, 7, 7, 7, 8] + [5] * 10,
            "doc": [3, 1, 2, 1, 3, 4, *range(10, 20)],
        }
    )
    pairs, stats = candidate_pairs(rows, max_bucket_all_pairs=4, anchors=2)
    got = set(zip(pairs["a"], pairs["b"], strict=True))
    small = {(1, 2), (1, 3), (2, 3)}  # band 0 bucket 7, all pairs; band 1 repeats (1, 3)
    anchored = {(10, d) for d in range(11, 20)} | {(11, d) for d in range(12, 20)}
    chained = {(d, d + 1) for d in range(10, 19)}
    assert got == small | anchored | chained
    assert stats.shared_buckets == 3 and stats.large_buckets == 1 and stats.large_bucket_docs == 10


def test_band_rows_one_band_at_a_time_equal_all_bands():
    sigs = MinHasher().signatures([prose.article(random.Random(i)) for i in range(5)])
    every = band_rows(sigs, 13, 8, first_doc=100)
    one = pd.concat([band_rows(sigs, 13, 8, first_doc=100, only_band=b) for b in range(13)])
    assert (
        every.sort_values(["band", "doc"])
        .reset_index(drop=True)
        .equals(one.sort_values(["band", "doc"]).reset_index(drop=True))
    )
    assert set(every["doc"]) == set(range(100, 105)) and len(every) == 65


def test_verify_pairs_drops_unverified_candidates():
    sigs = np.array([[1, 2, 3, 4], [1, 2, 3, 9], [5, 6, 7, 8]], dtype=np.uint32)
    pairs = pd.DataFrame({"a": [10, 10], "b": [11, 12]})
    edges, dropped = verify_pairs(pairs, sigs, 0.7, first_doc=10)
    assert edges[["a", "b"]].values.tolist() == [[10, 11]] and edges["similarity"].iloc[0] == 0.75
    assert dropped == 1


def chain_corpus():
    """Known groups: A ~ B ~ C with A and C below the threshold (a chain), Y0 = Y1 exactly and Y2 a
    one-word edit of Y0, and unrelated X, Z. Returns (sources in order, expected preconditions)."""
    rng = random.Random(3)
    a = prose.article(rng, paragraphs=8)
    words = a.split(" ")
    fresh = ["".join(rng.choices("abcdefghijklmnopqrstuvwxyz", k=7)) for _ in range(400)]
    x = 45
    b = " ".join(fresh[:x] + words[x:])
    c = " ".join(fresh[:x] + fresh[200 : 200 + x] + words[2 * x :])
    y0 = prose.article(rng, paragraphs=6)
    y2 = prose.near_duplicate(y0, rng, edits=1)
    s1 = pd.DataFrame({"id": ["A", "X", "Y0"], "text": [a, prose.article(rng, paragraphs=6), y0]})
    s2 = pd.DataFrame(
        {"id": ["B", "C", "Y1", "Y2", "Z"], "text": [b, c, y0, y2, prose.article(rng, paragraphs=6)]}
    )
    return [("s1", s1), ("s2", s2)]


def test_batch_mode_on_known_groups_and_its_difference_from_the_incremental_index(home):
    params = CorpusDedupParams()
    corpus = chain_corpus()
    sig = dict(
        zip(
            ["A", "X", "Y0", "B", "C", "Y1", "Y2", "Z"],
            MinHasher().signatures([t for _, f in corpus for t in f["text"]]),
            strict=True,
        )
    )
    assert jaccard(sig["A"], sig["B"]) >= 0.8 and jaccard(sig["B"], sig["C"]) >= 0.8
    assert jaccard(sig["A"], sig["C"]) < 0.8  # the chain

    result = corpus_dedup(corpus, params)
    table = result.table.set_index("id")
    assert table.index.tolist() == ["A", "X", "Y0", "B", "C", "Y1", "Y2", "Z"]  # input order
    assert table["kept"].to_dict() == {
        "A": True,
        "X": True,
        "Y0": True,
        "B": False,
        "C": False,
        "Y1": False,
        "Y2": False,
        "Z": True,
    }
    assert table.loc[["B", "C"], "duplicate_of"].tolist() == ["s1/A", "s1/A"]
    assert table.loc[["Y1", "Y2"], "duplicate_of"].tolist() == ["s1/Y0", "s1/Y0"]
    assert table.loc["C", "similarity"] < 0.8 <= table.loc["B", "similarity"]  # C joined through B
    assert table.loc["Y1", "similarity"] == 1.0
    assert table.loc[["A", "B", "C"], "component_size"].tolist() == [3, 3, 3]
    assert table.loc["A", "component"] == table.loc["C", "component"] != table.loc["Y0", "component"]
    assert table.loc[["X", "Z"], "component_size"].tolist() == [1, 1]
    assert table.loc[["A", "X"], "duplicate_of"].isna().all()
    assert result.stats["removed"] == 4 and result.stats["components"] == 2
    assert result.stats["verified_edges"] >= 4  # A-B, B-C, Y0-Y1, Y0-Y2 (Y1-Y2 too)

    # The incremental index, sources in the same order: C is compared only with kept documents,
    # and the only one near it (A) is below the threshold, so C stays.
    kept_incremental = []
    for source, frame in corpus:
        with open_fuzzy_index("local", home, "", "t", params.index_params()).claiming(source) as claims:
            kept_incremental += [f"{source}/{i}" for i in FuzzyDeduper(claims)(frame).kept["id"]]
    assert kept_incremental == ["s1/A", "s1/X", "s1/Y0", "s2/C", "s2/Z"]


def test_empty_corpus():
    result = corpus_dedup([], CorpusDedupParams())
    assert len(result.table) == 0 and result.stats["removed"] == 0
