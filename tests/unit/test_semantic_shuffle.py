"""The per-cluster helpers of semantic dedup's distributed path: evenly spaced k-means samples and
the nearest-centroid assignment (the decisions themselves: tests/unit/test_semantic_tasks.py)."""

import numpy as np

from refinery.dedup.semantic import sample_positions
from refinery.dedup.semantic_shuffle import assign
from tests.unit.test_semdedup_rule import unit


def test_a_sample_is_evenly_spaced_and_each_vector_goes_to_its_nearest_centroid():
    positions = sample_positions(1000, 60)
    assert len(positions) == 60 and positions[0] == 0 and positions[-1] == 999
    assert sample_positions(10, 60).tolist() == list(range(10))
    centroids = unit(np.eye(4, 8))
    assert assign(unit(np.eye(8)[:4] + 0.1), centroids).tolist() == [0, 1, 2, 3]
