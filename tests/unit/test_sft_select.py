"""Selection by clustering: k-means finds the groups, allocation covers them all under a small
budget, and the within-cluster order is what was asked for."""

import numpy as np
import pytest

from refinery.sft.select import SelectionParams, allocate, kmeans, pca_2d, select, selection_plot

SIZES = [400, 200, 100, 50, 25, 12]  # lopsided, as instruction sets are (the smallest: 1.5%)


def blobs(sizes=SIZES, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(len(sizes), dim)) * 4
    truth = np.repeat(np.arange(len(sizes)), sizes)
    x = centres[truth] + rng.normal(size=(len(truth), dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    perm = rng.permutation(len(truth))
    return x[perm].astype(np.float32), truth[perm]


def test_kmeans_recovers_separated_groups():
    x, truth = blobs()
    km = kmeans(x, len(SIZES), seed=1)
    for label in range(len(SIZES)):  # each found cluster is one true group, and vice versa
        assert len(set(truth[km.labels == label])) == 1
    assert len(set(km.labels)) == len(SIZES)
    assert km.inertia[-1] <= km.inertia[0]


def test_small_budget_covers_every_cluster_where_random_sampling_does_not():
    x, truth = blobs()
    budget = 16
    sel = select(x, None, SelectionParams(budget_count=budget, n_clusters=len(SIZES), seed=2))
    assert sel.keep.sum() == budget and sel.coverage == 1.0
    assert set(truth[sel.keep]) == set(range(len(SIZES)))  # every true group represented
    rng = np.random.default_rng(2)
    random_pick = rng.choice(len(x), size=budget, replace=False)
    assert len(set(truth[random_pick])) < len(SIZES)  # what selection is for


def test_proportional_and_uniform_allocation():
    sizes = np.array(SIZES)
    prop = allocate(sizes, 100, "proportional")
    assert prop.sum() == 100 and (prop >= 1).all() and (prop <= sizes).all()
    assert list(prop) == sorted(prop, reverse=True)  # larger clusters get more
    assert abs(prop[0] - 100 * sizes[0] / sizes.sum()) <= 1
    uni = allocate(sizes, 100, "uniform")
    assert uni.sum() == 100 and uni[-1] == 12  # a small cluster gives all it has
    assert uni[:-1].max() - uni[:-1].min() <= 1  # the rest share the remainder equally
    few = allocate(sizes, 3, "proportional")
    assert list(few) == [1, 1, 1, 0, 0, 0]  # budget below k: the largest clusters
    rng = np.random.default_rng(0)
    for _ in range(200):
        s = rng.integers(0, 50, size=rng.integers(1, 12))
        b = int(rng.integers(0, s.sum() + 5))
        for mode in ("proportional", "uniform"):
            a = allocate(s, b, mode, seed=1)
            assert a.sum() == min(b, s.sum()) and (a <= s).all() and (a >= 0).all()
            if b >= (s > 0).sum():
                assert ((a > 0) == (s > 0)).all()


def test_within_cluster_by_quality_and_by_centroid():
    x, _ = blobs()
    quality = np.random.default_rng(3).random(len(x))
    quality[::7] = np.nan
    sel = select(x, quality, SelectionParams(budget_fraction=0.1, n_clusters=8, within_cluster="quality"))
    for c in range(8):
        members = sel.labels == c
        kept_q, dropped_q = quality[members & sel.keep], quality[members & ~sel.keep]
        scored_dropped = dropped_q[~np.isnan(dropped_q)]
        if len(scored_dropped):
            assert np.nanmin(kept_q) >= scored_dropped.max()  # the best-scored records of each cluster
    near = select(x, None, SelectionParams(budget_fraction=0.1, n_clusters=8, within_cluster="centroid"))
    for c in range(8):
        members = near.labels == c
        if (members & ~near.keep).any():
            assert near.distances[members & near.keep].max() <= near.distances[members & ~near.keep].min()


def test_budget_forms_and_edge_cases():
    assert SelectionParams(budget_fraction=0.25).budget(10) == 3
    assert SelectionParams(budget_count=50).budget(10) == 10
    with pytest.raises(ValueError):
        SelectionParams(budget_fraction=0)
    empty = select(np.zeros((0, 4), np.float32), None, SelectionParams())
    assert empty.keep.shape == (0,) and empty.coverage == 1.0
    one = select(np.ones((1, 4), np.float32), None, SelectionParams(budget_count=1))
    assert one.keep.tolist() == [True]
    with pytest.raises(ValueError, match="NaN"):
        kmeans(np.full((3, 2), np.nan, np.float32), 2)


def test_pca_and_plot():
    x, truth = blobs(dim=16)
    xy = pca_2d(x)
    assert xy.shape == (len(x), 2) and abs(xy[:, 0].mean()) < 1e-4
    assert xy[:, 0].var() >= xy[:, 1].var()
    uri = selection_plot(x, truth < 2)
    assert uri.startswith("data:image/png;base64,") and len(uri) < 60_000
