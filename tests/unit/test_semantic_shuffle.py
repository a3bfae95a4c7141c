"""Semantic dedup sharded by cluster decides exactly as the one-process plan, cluster by cluster."""

import dataclasses

import numpy as np
import pytest

from refinery.dedup.semantic import Claims, SemanticDedupParams, plan
from refinery.dedup.semantic_shuffle import assign, plan_by_cluster, sample_positions
from tests.unit.test_semdedup_rule import near_copies, unit


def _fields(decision) -> tuple:
    d = dataclasses.asdict(decision)
    return tuple(round(v, 5) if isinstance(v, float) else v for v in d.values())


@pytest.mark.parametrize("rule", ["semdedup", "first_come"])
def test_per_cluster_decisions_equal_the_one_process_plan(rule):
    vectors = near_copies(seed=3)
    ids = [f"d{i}" for i in range(len(vectors))]
    rng = np.random.default_rng(9)
    claims = Claims(  # other partitions' kept documents: copies of some members, and unrelated ones
        keys=[f"other/c{i}" for i in range(30)],
        vectors=unit(
            np.r_[
                vectors[:15] + 0.01 * rng.normal(size=(15, vectors.shape[1])),
                rng.normal(size=(15, vectors.shape[1])),
            ]
        ),
        block_rows=7,
    )
    params = SemanticDedupParams(rule=rule, clusters=6, epsilon=0.05)
    want = plan("s", ids, vectors, claims, params)
    got = plan_by_cluster("s", ids, vectors, claims, params, sample_rows=len(vectors))
    assert want.duplicates > 10 and sum(
        d.neighbour.startswith("other/") for d in want.decisions.values() if d.duplicate
    )
    assert got.cluster_sizes == want.cluster_sizes
    assert {i: _fields(d) for i, d in got.decisions.items()} == {
        i: _fields(d) for i, d in want.decisions.items()
    }


def test_a_sample_fits_the_centroids_and_every_document_is_decided():
    vectors = near_copies(seed=4)
    ids = [f"d{i}" for i in range(len(vectors))]
    params = SemanticDedupParams(clusters=5, epsilon=0.05)
    got = plan_by_cluster("s", ids, vectors, Claims(), params, sample_rows=60)
    assert sorted(got.decisions) == sorted(ids) and sum(got.cluster_sizes) == len(ids)
    kept = [i for i, d in got.decisions.items() if not d.duplicate]
    for d in got.decisions.values():  # removed documents name a kept one (through a chain, maybe)
        if d.duplicate:
            assert d.neighbour.removeprefix("s/") in kept and d.trigger_similarity >= params.threshold - 1e-6
    positions = sample_positions(1000, 60)
    assert len(positions) == 60 and positions[0] == 0 and positions[-1] == 999
    centroids = unit(np.eye(4, 8))
    assert assign(unit(np.eye(8)[:4] + 0.1), centroids).tolist() == [0, 1, 2, 3]
