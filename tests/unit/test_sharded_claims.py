"""The sharded (Redis Cluster) claims' protocol under forced interleavings, and a node killed mid-claim.

Each interleaving holds one claimant at a step of its claim (the index's ``_step`` seam) while
another claims a near-duplicate, so every branch of the rule runs deterministically: waiting for
an earlier pending ticket, the inbox that makes a later ticket yield to an earlier one that
registered after it looked, and the lease that releases a dead run's pending claims.
"""

from __future__ import annotations

import random
import threading

import numpy as np
import pandas as pd
import pytest
import redis

from refinery.dedup.backends import open_exact_index, open_fuzzy_index
from refinery.dedup.exact import ExactDeduper, ExactDedupParams, content_hash
from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
from refinery.dedup.redis_cluster import IndexUnavailable
from refinery.dedup.sharded_fuzzy import ShardedFuzzyIndex
from refinery.sample import prose
from tests.redis_cluster import LocalCluster

PARAMS = FuzzyDedupParams()
rng = random.Random(19)
ARTICLE = prose.article(rng, paragraphs=4)
EDIT = prose.near_duplicate(ARTICLE, random.Random(1), edits=1)


def _fuzzy(url: str) -> ShardedFuzzyIndex:
    return open_fuzzy_index("redis-cluster", None, url, "t", PARAMS.index_params())


class Held:
    """Hold an index's claim at ``step`` until released; ``reached`` is set when it gets there."""

    def __init__(self, index: ShardedFuzzyIndex, step: str):
        self.reached, self.go = threading.Event(), threading.Event()
        original = index._step

        def hold(name: str) -> None:
            original(name)
            if name == step and not self.reached.is_set():
                self.reached.set()
                assert self.go.wait(60), "never released"

        index._step = hold


def _claim_in_thread(index, source, doc_id, text, out: dict):
    def work():
        try:
            with index.claiming(source) as claims:
                out[source] = FuzzyDeduper(claims)(pd.DataFrame({"id": [doc_id], "text": [text]}))
        except Exception as err:  # reported to the test
            out[source] = err

    thread = threading.Thread(target=work)
    thread.start()
    return thread


def _owner(result) -> str | None:
    rejected = result.rejected
    return rejected["duplicate_of"].iloc[0] if len(rejected) else None


def test_a_later_ticket_waits_for_an_earlier_pending_one(redis_cluster_clean):
    url = redis_cluster_clean
    a, b = _fuzzy(url), _fuzzy(url)
    held = Held(a, "probed")  # a has its ticket, is registered and looked, but has not decided
    out: dict = {}
    ta = _claim_in_thread(a, "a", "1", ARTICLE, out)
    assert held.reached.wait(30)
    tb = _claim_in_thread(b, "b", "1", EDIT, out)
    tb.join(0.5)
    assert tb.is_alive(), "b decided without waiting for a's earlier pending claim"
    held.go.set()
    ta.join(30), tb.join(30)
    assert len(out["a"].kept) == 1 and _owner(out["b"]) == "a/1"


def test_an_earlier_ticket_that_registers_late_wins_through_the_inbox(redis_cluster_clean):
    url = redis_cluster_clean
    a, b = _fuzzy(url), _fuzzy(url)
    held_a = Held(a, "ticketed")  # a takes the smaller ticket, then stops before registering
    held_b = Held(b, "probed")  # b registers and looks (a is not in any bucket yet), then stops
    out: dict = {}
    ta = _claim_in_thread(a, "a", "1", ARTICLE, out)
    assert held_a.reached.wait(30)
    tb = _claim_in_thread(b, "b", "1", EDIT, out)
    assert held_b.reached.wait(30)
    held_a.go.set()  # a registers, sees b pending with a larger ticket: enters b's inbox, keeps
    ta.join(30)
    assert len(out["a"].kept) == 1
    held_b.go.set()  # b's keep finds a in its inbox, waits for a's decision: removed
    tb.join(30)
    assert _owner(out["b"]) == "a/1"
    index = _fuzzy(url)
    assert index.count() == 1
    index.close()


def test_a_dead_runs_pending_claim_is_released_by_its_lease(redis_cluster_clean):
    url = redis_cluster_clean
    a = ShardedFuzzyIndex(_fuzzy(url)._r, "t", PARAMS.index_params(), lease_s=1.0)
    held = Held(a, "probed")
    out: dict = {}
    ta = _claim_in_thread(a, "a", "1", ARTICLE, out)
    assert held.reached.wait(30)
    a._lease.release()  # as if a's process died: nothing renews its lease
    b = _fuzzy(url)
    with b.claiming("b") as claims:
        result = FuzzyDeduper(claims)(pd.DataFrame({"id": ["1"], "text": [EDIT]}))
    assert len(result.kept) == 1  # a's pending claim was released, b's is the only one
    held.go.set()
    ta.join(30)
    assert isinstance(out["a"], IndexUnavailable) and "lease" in str(out["a"])
    index = _fuzzy(url)
    assert index.count() == 1  # b only: a's run withdrew what it had left on abort
    index.close()


def _corpus(n: int, seed: int) -> pd.DataFrame:
    r = random.Random(seed)
    texts = [prose.article(r, paragraphs=2) for _ in range(n)]
    texts += [prose.near_duplicate(t, r, edits=1) for t in texts[: n // 3]]
    return pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_a_node_killed_mid_claim_fails_the_step_clearly_and_loses_or_doubles_nothing(tmp_path, stage):
    """A node is SIGKILLed while a partition claims batch after batch: the run fails with
    IndexUnavailable; after the node restarts (fsync-always AOF) the partition's next run and a
    second partition of copies leave the index holding exactly the kept documents."""
    cluster = LocalCluster(tmp_path / "cluster", nodes=3, persistent=True)
    try:
        url = cluster.url
        frame = _corpus(60, seed=3)
        started = threading.Event()

        def open_index():
            if stage == "exact":
                return open_exact_index("redis-cluster", None, url, "k")
            return open_fuzzy_index("redis-cluster", None, url, "k", PARAMS.index_params())

        def dedupe(claims, batch):
            return (ExactDeduper(claims, ExactDedupParams()) if stage == "exact" else FuzzyDeduper(claims))(
                batch
            )

        killer = threading.Thread(target=lambda: started.wait(60) and cluster.kill(cluster.ports[1]))
        killer.start()
        with (
            pytest.raises(IndexUnavailable, match="Redis Cluster") as failure,
            open_index().claiming("a") as claims,
        ):
            for round_ in range(10_000):
                dedupe(claims, frame.iloc[(round_ * 7) % len(frame) :][:7])
                started.set()
        killer.join()
        assert any("withdrawing the claims" in note for note in getattr(failure.value, "__notes__", []))
        cluster.restart(cluster.ports[1])

        with open_index().claiming("a") as claims:
            kept_a = dedupe(claims, frame).kept
        copies = frame.assign(id=[f"copy-{i}" for i in frame["id"]])
        with open_index().claiming("b") as claims:
            result_b = dedupe(claims, copies)
        assert len(result_b.kept) == 0 and set(result_b.rejected["duplicate_of"]) <= {
            f"a/{i}" for i in kept_a["id"]
        }
        index = open_index()
        assert index.count() == len(kept_a)  # nothing doubled (b claimed nothing), nothing lost
        if stage == "exact":
            hashes = [content_hash(t, "simplified") for t in kept_a["text"]]
            assert index.lookup(hashes) == {h: f"a/{i}" for h, i in zip(hashes, kept_a["id"], strict=True)}
        else:
            pending = [
                v
                for port in cluster.ports
                for key in redis.Redis(port=port).scan_iter(match="{k:fuzzy:*}:state")
                for v in redis.Redis(port=port).hvals(key)
            ]
            assert pending and set(pending) == {b"k"}
        index.close()
    finally:
        cluster.stop()


def test_sharded_and_local_decide_alike_on_one_corpus(home, redis_cluster_clean):
    """Without a race, the sharded protocol is the other backends' rule: the same kept rows, owners
    and similarities as the local index, batch by batch."""
    frame = _corpus(45, seed=8)
    got = {}
    for backend, url in (("local", ""), ("redis-cluster", redis_cluster_clean)):
        index = open_fuzzy_index(backend, home, url, "t", PARAMS.index_params())
        with index.claiming("a") as claims:
            deduper = FuzzyDeduper(claims)
            results = [deduper(frame.iloc[i : i + 10]) for i in range(0, len(frame), 10)]
        got[backend] = (
            [r.kept["id"].tolist() for r in results],
            [r.rejected["duplicate_of"].tolist() for r in results],
            np.concatenate([r.kept["near_dup_similarity"].to_numpy() for r in results]),
        )
    assert got["local"][:2] == got["redis-cluster"][:2]
    assert sum(map(len, got["local"][1])) > 0
    np.testing.assert_allclose(got["local"][2], got["redis-cluster"][2])


def test_a_kept_documents_similarity_is_its_best_earlier_kept_one_however_the_claims_are_cut(
    tmp_path, redis_cluster_clean
):
    """Pairs of documents edited apart (estimated Jaccard about 0.5-0.7: below the threshold, some
    sharing a bucket) one after the other: each is kept, and its similarity is the best with an
    earlier kept document, as the local index reports it. The sharded index once took the best of
    every candidate, a later document of the same chunk included, so the kept rows' similarity
    changed with the claims' chunks (the Ray engine claims by slice, the local engine by batch)."""
    from refinery.paths import Layout

    r = random.Random(4)
    texts = []
    for _ in range(40):
        text = prose.article(r, paragraphs=2)
        texts += [text, prose.near_duplicate(text, r, edits=8)]
    frame = pd.DataFrame({"id": [f"p{i}" for i in range(len(texts))], "text": texts})
    got = {}
    for backend in ("local", "redis-cluster"):
        for rows in (6, len(frame)):
            home = Layout.at(tmp_path / f"{backend}-{rows}")
            index = open_fuzzy_index(backend, home, redis_cluster_clean, f"t{rows}", PARAMS.index_params())
            with index.claiming("a") as claims:
                deduper = FuzzyDeduper(claims)
                results = [deduper(frame.iloc[i : i + rows]) for i in range(0, len(frame), rows)]
            index.close()
            assert sum(len(x.rejected) for x in results) == 0
            got[backend, rows] = np.concatenate([x.kept["near_dup_similarity"].to_numpy() for x in results])
    want = got["local", len(frame)]
    assert (want[1::2] > 0).sum() >= 3 and not want[0::2].any()  # the pairs' second documents only
    for key, similarity in got.items():
        np.testing.assert_allclose(similarity, want, err_msg=str(key))
