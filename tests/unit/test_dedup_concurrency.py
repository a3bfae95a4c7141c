"""Concurrent partitions against one index: each duplicate kept exactly once, in any process.

Four partitions are claimed at the same time by four 'spawn' processes (started behind a barrier,
three documents per batch), first the exact stage, then the fuzzy stage over what exact kept,
against one local index (SQLite) and one real Redis server. They share exact copies (identical or
case/spacing variants) and one-word edits of the same articles at the same row positions.

Against the implementation before atomic claims (commit 22759c8), the same scenario failed (run
with its API: begin/process/commit): the local fuzzy index kept all 81 surviving documents, 54
near-duplicate pairs across partitions (each partition read the empty pickle at start and the last to
commit erased the others' claims: 27 entries for 81 kept documents, and 27-29 of 81 probe edits
passed); Redis exact kept 1-2 contents twice (lookup-then-set) and Redis fuzzy 24-25 near-duplicate
pairs. Only the local exact index was right, and only because it held one write lock per partition:
its partitions' claim spans did not overlap. Numbers in docs/dedup.md.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pandas as pd
import pytest

from refinery.dedup.backends import open_exact_index, open_fuzzy_index
from refinery.dedup.exact import ExactDeduper, ExactDedupParams, content_hash
from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.ids import doc_key
from refinery.paths import Layout
from tests.unit.dedup_race import (
    BATCH,
    build_partitions,
    one_word_edits,
    overlapping,
    read_results,
    run_concurrently,
    write_result,
)

PARAMS = FuzzyDedupParams()
NAMESPACE = "race"


def _stage(
    barrier, kind: str, backend: str, home: Path, url: str, source: str, frame: pd.DataFrame, out: Path
):
    import time

    layout = Layout.at(home)
    kept, rejected = [], []
    if kind == "exact":
        index = open_exact_index(backend, layout, url, NAMESPACE)
    else:
        index = open_fuzzy_index(backend, layout, url, NAMESPACE, PARAMS.index_params())
    with index.claiming(source) as claims:
        deduper = ExactDeduper(claims, ExactDedupParams()) if kind == "exact" else FuzzyDeduper(claims)
        barrier.wait()  # every partition has withdrawn its claims: all claim from here, together
        start = time.time()  # claims withdrawn: from here on the partition claims batch by batch
        for lo in range(0, len(frame), BATCH):
            result = deduper(frame.iloc[lo : lo + BATCH].reset_index(drop=True))
            kept.append(result.kept)
            rejected.append(result.rejected)
            time.sleep(0.02)  # let the other partitions' batches in between
    write_result(out, kind, kept, rejected, (start, time.time()))
    return pd.concat(kept, ignore_index=True)


def claim_partition(barrier, backend: str, home: str, url: str, source: str, frame: pd.DataFrame, out: str):
    """One partition through exact, then fuzzy dedup, each started with every other partition's."""
    out_path = Path(out)
    out_path.mkdir(parents=True, exist_ok=True)
    survivors = _stage(barrier, "exact", backend, Path(home), url, source, frame, out_path)
    _stage(barrier, "fuzzy", backend, Path(home), url, source, survivors[["id", "text"]], out_path)


@pytest.fixture(params=["local", "redis", "redis-cluster"])
def backend(request):
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_clean")
    if request.param == "redis-cluster":
        return "redis-cluster", request.getfixturevalue("redis_cluster_clean")
    return "local", ""


def test_concurrent_partitions_keep_every_duplicate_once(home, backend, tmp_path):
    kind, url = backend
    partitions = build_partitions()
    results = tmp_path / "results"
    jobs = [
        (kind, str(home.home), url, source, frame, str(results / source))
        for source, frame in partitions.items()
    ]
    run_concurrently(claim_partition, jobs)

    exact_kept, exact_rejected, exact_spans = read_results(results, "exact")
    fuzzy_kept, fuzzy_rejected, fuzzy_spans = read_results(results, "fuzzy")
    assert overlapping(exact_spans) and overlapping(fuzzy_spans), "the partitions did not claim concurrently"

    # Exact: every distinct content kept exactly once over all partitions; the rest name a kept copy.
    every = pd.concat(partitions.values())
    kept_hashes = [content_hash(t, "simplified") for t in exact_kept["text"]]
    assert (
        len(kept_hashes)
        == len(set(kept_hashes))
        == len({content_hash(t, "simplified") for t in every["text"]})
    )
    exact_keys = {doc_key(s, i) for s, i in zip(exact_kept["source"], exact_kept["id"], strict=True)}
    assert set(exact_rejected["duplicate_of"]) <= exact_keys
    assert len(exact_rejected) == 9 * 3  # 9 shared articles, each kept in one of the 4 partitions

    # Fuzzy: no two kept documents are near-duplicates; every rejected row names a kept document.
    hasher = MinHasher(PARAMS.num_perm, PARAMS.ngram, PARAMS.seed)
    sigs = hasher.signatures(fuzzy_kept["text"].tolist())
    close = [
        (a, b)
        for a, b in itertools.combinations(range(len(fuzzy_kept)), 2)
        if jaccard(sigs[a], sigs[b]) >= PARAMS.threshold
    ]
    assert close == []
    fuzzy_keys = {doc_key(s, i) for s, i in zip(fuzzy_kept["source"], fuzzy_kept["id"], strict=True)}
    assert set(fuzzy_rejected["duplicate_of"]) <= fuzzy_keys
    assert len(fuzzy_rejected) == 9 * 3  # 9 edited articles, one edit kept of the 4

    # The indexes hold exactly the kept documents.
    layout = home
    exact_index = open_exact_index(kind, layout, url, NAMESPACE)
    fuzzy_index = open_fuzzy_index(kind, layout, url, NAMESPACE, PARAMS.index_params())
    assert exact_index.count() == len(exact_kept) and fuzzy_index.count() == len(fuzzy_kept)
    exact_index.close()
    fuzzy_index.close()

    # A probe partition of one-word edits of every kept document is removed in full.
    probe = one_word_edits(fuzzy_kept)
    with open_exact_index(kind, layout, url, NAMESPACE).claiming("probe") as claims:
        exact = ExactDeduper(claims, ExactDedupParams())(probe)
    with open_fuzzy_index(kind, layout, url, NAMESPACE, PARAMS.index_params()).claiming("probe") as claims:
        fuzzy = FuzzyDeduper(claims)(exact.kept)
    assert len(fuzzy.kept) == 0
    assert len(exact.rejected) + len(fuzzy.rejected) == len(probe)
    assert set(fuzzy.rejected["duplicate_of"]) <= fuzzy_keys
