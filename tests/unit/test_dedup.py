"""Exact and fuzzy dedup over persistent indexes: local files and a real Redis server."""

import random

import pandas as pd
import pytest

from refinery.dedup.backends import open_exact_index, open_fuzzy_index, redis_connection, reset_indexes
from refinery.dedup.exact import ExactDeduper, ExactDedupParams, content_hash
from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
from refinery.dedup.lsh_index import IndexParamsMismatch
from refinery.sample import prose

rng = random.Random(21)
ARTICLES = [prose.article(rng, paragraphs=5) for _ in range(12)]
PARAMS = FuzzyDedupParams()


def frame(ids, texts):
    return pd.DataFrame({"id": ids, "text": texts})


def exact_run(backend, home, url, source, ids, texts):
    with open_exact_index(backend, home, url or "", "t").claiming(source) as claims:
        result = ExactDeduper(claims, ExactDedupParams())(frame(ids, texts))
    return result, claims.withdrawn


def fuzzy_run(backend, home, url, source, ids, texts, batch=100):
    with open_fuzzy_index(backend, home, url or "", "t", PARAMS.index_params()).claiming(source) as claims:
        deduper = FuzzyDeduper(claims)
        parts = [deduper(frame(ids[i : i + batch], texts[i : i + batch])) for i in range(0, len(ids), batch)]
    return pd.concat([p.kept for p in parts]), pd.concat([p.rejected for p in parts])


@pytest.fixture(params=["local", "redis"])
def backend(request):
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_clean")
    return "local", None


def test_normalization_levels():
    a, b = "Hello,  World! 2024", "hello world 1999"
    assert content_hash(a, "simplified") == content_hash(b, "simplified")
    assert content_hash(a, "whitespace") != content_hash(b, "whitespace")
    assert content_hash("a  b", "whitespace") == content_hash("a b", "whitespace")
    assert content_hash("a  b", "none") != content_hash("a b", "none")


def test_exact_first_come_first_served(home, backend):
    kind, url = backend
    r1, _ = exact_run(kind, home, url, "a", ["1", "2", "3"], [ARTICLES[0], ARTICLES[1], ARTICLES[0].upper()])
    assert r1.kept["id"].tolist() == ["1", "2"]
    assert r1.rejected["duplicate_of"].tolist() == ["a/1"] and r1.rejected["reason"].tolist() == [
        "exact_duplicate"
    ]
    r2, _ = exact_run(kind, home, url, "b", ["x", "y"], [ARTICLES[1], ARTICLES[2]])
    assert r2.kept["id"].tolist() == ["y"] and r2.rejected["duplicate_of"].tolist() == ["a/2"]
    # Re-running "a" unchanged gives the same decisions and keeps its claims.
    again, withdrawn = exact_run(
        kind, home, url, "a", ["1", "2", "3"], [ARTICLES[0], ARTICLES[1], ARTICLES[0]]
    )
    assert again.kept["id"].tolist() == ["1", "2"] and withdrawn == []


def test_exact_changed_partition_replaces_its_claims(home, backend):
    kind, url = backend
    exact_run(kind, home, url, "a", ["1", "2"], [ARTICLES[0], ARTICLES[1]])
    exact_run(kind, home, url, "b", ["9"], [ARTICLES[1]])  # dropped in favour of a/2
    _, withdrawn = exact_run(kind, home, url, "a", ["1"], [ARTICLES[0]])  # a/2 left the source
    assert withdrawn == ["a/2"]
    index = open_exact_index(kind, home, url or "", "t")
    assert index.count() == 1  # no double counting: a's one claim, nothing of the old a/2
    index.close()
    rerun_b, _ = exact_run(kind, home, url, "b", ["9"], [ARTICLES[1]])
    assert rerun_b.kept["id"].tolist() == ["9"]  # re-running the stale partition restores the copy


def test_fuzzy_within_batch_across_batches_and_sources(home, backend):
    kind, url = backend
    near = [prose.near_duplicate(t, random.Random(i), edits=2) for i, t in enumerate(ARTICLES[:4])]
    ids = [f"d{i}" for i in range(8)] + ["n0", "n1"]
    texts = ARTICLES[:8] + near[:2]
    kept, rejected = fuzzy_run(kind, home, url, "a", ids, texts, batch=6)  # n0 in batch 2 vs d0 in batch 1
    assert kept["id"].tolist() == [f"d{i}" for i in range(8)]
    assert rejected["duplicate_of"].tolist() == ["a/d0", "a/d1"]
    assert (rejected["similarity"] >= 0.8).all() and (rejected["reason"] == "near_duplicate").all()
    assert "estimated Jaccard" in rejected["reason_detail"].iloc[0]
    kept_b, rejected_b = fuzzy_run(kind, home, url, "b", ["m2", "m3", "z"], [near[2], near[3], ARTICLES[10]])
    assert kept_b["id"].tolist() == ["z"] and rejected_b["duplicate_of"].tolist() == ["a/d2", "a/d3"]
    assert kept_b["near_dup_similarity"].iloc[0] < 0.8


def test_fuzzy_rerun_is_idempotent_and_replaces_contribution(home, backend):
    kind, url = backend
    first = fuzzy_run(kind, home, url, "a", ["1", "2"], ARTICLES[:2])
    again = fuzzy_run(kind, home, url, "a", ["1", "2"], ARTICLES[:2])
    assert first[0]["id"].tolist() == again[0]["id"].tolist() == ["1", "2"]
    index = open_fuzzy_index(kind, home, url or "", "t", PARAMS.index_params())
    assert index.count() == 2
    index.close()
    fuzzy_run(kind, home, url, "a", ["3"], ARTICLES[2:3])  # changed input: old entries gone
    index = open_fuzzy_index(kind, home, url or "", "t", PARAMS.index_params())
    assert index.count() == 1
    index.close()
    kept, _ = fuzzy_run(kind, home, url, "b", ["1"], ARTICLES[:1])
    assert kept["id"].tolist() == ["1"]  # a/1 left the index, so b's copy is now the first


def test_fuzzy_index_parameters_are_checked(home, backend):
    kind, url = backend
    fuzzy_run(kind, home, url, "a", ["1"], ARTICLES[:1])
    other = FuzzyDedupParams(num_perm=64).index_params()
    with pytest.raises(IndexParamsMismatch, match="other parameters"):
        open_fuzzy_index(kind, home, url or "", "t", other)
    reset_indexes(kind, home, url or "", "t", "fuzzy")
    open_fuzzy_index(kind, home, url or "", "t", other).close()


def test_redis_url_parsing_and_unreachable_server(home):
    assert redis_connection("redis://:s3cret@10.0.0.5:6380/2") == {
        "host": "10.0.0.5",
        "port": 6380,
        "db": 2,
        "password": "s3cret",
    }
    with pytest.raises(ValueError):
        redis_connection("http://localhost")
    with pytest.raises(ConnectionError, match="cannot reach"):
        open_exact_index("redis", home, "redis://127.0.0.1:1/0", "t")
    with pytest.raises(ValueError, match="unknown dedup index backend"):
        open_exact_index("cassandra", home, "", "t")
