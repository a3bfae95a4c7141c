"""Choosing a diverse subset of SFT records: embed each record's key, cluster, sample per cluster.

Instruction sets are lopsided: thousands of near-identical "rewrite this sentence" prompts and a
handful about anything else. Sampling at random to a budget keeps the lopsidedness; sampling
per k-means cluster of the embeddings keeps every kind of request represented
(proportional allocation: each cluster in proportion to its size, but at least one record while
the budget allows; uniform: the same number from every cluster, water-filled so small clusters
give all they have and the rest goes to the larger ones). Within a cluster, records are taken at
random, by the input's quality score (highest first), or nearest to the centroid (most typical).

k-means is plain Lloyd in numpy on L2-normalised float32 embeddings, with greedy k-means++
seeding (several restarts on a subsample, the best kept) and distance blocks sized for the
cache, so 100k records of 384 dimensions cluster in well under a minute on one core.

Selection is four steps, each a function here, so the in-process stage and the distributed one
(:mod:`refinery.sft.selection_plan`) run the same code and make the same choices:

1. **fit**: k-means on a bounded sample (:func:`sample_positions`: every record while the
   partition has at most ``kmeans_sample_rows``, else that many positions drawn with ``seed``);
2. **assign**: every record to its nearest centroid (:func:`assign`), each row on its own;
3. **allocate**: per-cluster quotas from the cluster sizes alone (:func:`allocate`);
4. **choose**: within each cluster, the first ``taken`` records in the requested order, ties
   broken by a hash of the record's position (:func:`tiebreak`), so a cluster is decided from its
   own rows wherever it is decided (:func:`choose`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_validator

_BLOCK_ROWS = 4096
_SEEDING_MIN, _SEEDING_PER_CENTRE = 4096, 30  # seeding subsample: max(4096, 30 k) points
_INIT_ITERATIONS = 5


class SelectionParams(BaseModel):
    budget_count: int | None = Field(None, description="Records to keep (exclusive with budget_fraction).")
    budget_fraction: float | None = Field(
        0.5, description="Share of records to keep, in (0, 1] (ignored when budget_count is set)."
    )
    n_clusters: int | None = Field(
        None, description="k of k-means; default round(sqrt(n)), at most the budget so every cluster fits."
    )
    allocation: Literal["proportional", "uniform"] = Field(
        "proportional",
        description="Per-cluster quota: proportional to cluster size, or equal (water-filled).",
    )
    within_cluster: Literal["random", "quality", "centroid"] = Field(
        "random",
        description="Which records of a cluster: random, highest 'quality' first, or nearest centroid.",
    )
    kmeans_iterations: int = Field(
        30, description="Lloyd iterations at most (stops when assignments settle)."
    )
    kmeans_restarts: int = Field(
        8, description="k-means++ seedings tried on a subsample; the best is refined."
    )
    seed: int = Field(0, description="Seeds k-means and every random choice.")
    kmeans_sample_rows: int = Field(
        100_000,
        ge=1,
        description="k-means is fitted on at most this many records (drawn with seed), then every "
        "record is assigned to its nearest centroid: the fit's memory stays bounded whatever the size.",
    )

    @model_validator(mode="after")
    def _budget(self) -> SelectionParams:
        if self.budget_count is not None:
            if self.budget_count < 0:
                raise ValueError("budget_count must be ≥ 0")
        elif self.budget_fraction is None or not 0 < self.budget_fraction <= 1:
            raise ValueError("give budget_count, or budget_fraction in (0, 1]")
        if self.n_clusters is not None and self.n_clusters < 1:
            raise ValueError("n_clusters must be ≥ 1")
        return self

    def budget(self, n: int) -> int:
        if self.budget_count is not None:
            return min(self.budget_count, n)
        return min(n, math.ceil(self.budget_fraction * n - 1e-9))

    def clusters(self, n: int, budget: int) -> int:
        if n == 0:
            return 0
        if self.n_clusters is not None:
            return min(self.n_clusters, n)
        return max(1, min(round(math.sqrt(n)), max(budget, 1), n))


@dataclass
class KMeansResult:
    labels: np.ndarray  # (n,) int32
    centroids: np.ndarray  # (k, d) float32
    distances: np.ndarray  # (n,) float32, squared Euclidean to the own centroid
    iterations: int
    inertia: list[float] = field(default_factory=list)


def _nearest(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of and squared distance to the nearest centroid, in blocks of rows."""
    c_sq = np.einsum("ij,ij->i", centroids, centroids)
    labels = np.empty(len(x), dtype=np.int32)
    dists = np.empty(len(x), dtype=np.float32)
    for lo in range(0, len(x), _BLOCK_ROWS):
        block = x[lo : lo + _BLOCK_ROWS]
        d = block @ centroids.T
        d *= -2
        d += c_sq
        idx = np.argmin(d, axis=1)
        labels[lo : lo + len(block)] = idx
        x_sq = np.einsum("ij,ij->i", block, block)
        dists[lo : lo + len(block)] = np.maximum(d[np.arange(len(block)), idx] + x_sq, 0)
    return labels, dists


def _seed(sample: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Greedy k-means++ (as scikit-learn: 2 + log k candidates per centre, the one that lowers the
    potential most): a small group missed here is rarely found again by Lloyd's iterations."""
    s_sq = np.einsum("ij,ij->i", sample, sample).astype(np.float64)
    trials = 2 + int(math.log(k)) if k > 1 else 1
    centres = np.empty((k, sample.shape[1]), dtype=np.float32)
    first = int(rng.integers(len(sample)))
    centres[0] = sample[first]
    best = np.maximum(s_sq - 2 * (sample @ sample[first]).astype(np.float64) + s_sq[first], 0)
    for j in range(1, k):
        total = float(best.sum())
        if total <= 0:  # fewer distinct points than centres: any point will do
            picks = rng.integers(len(sample), size=1)
        else:
            picks = rng.choice(len(sample), size=trials, p=best / total)
        dist = s_sq[None, :] - 2 * (sample[picks] @ sample.T).astype(np.float64) + s_sq[picks][:, None]
        candidates = np.minimum(best[None, :], np.maximum(dist, 0))
        winner = int(np.argmin(candidates.sum(axis=1)))
        centres[j] = sample[picks[winner]]
        best = candidates[winner]
    return centres


def _centroid_sums(xt: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    """Per-cluster sums of the rows of x (given transposed): one bincount per dimension, far
    faster than ``np.add.at`` and without sorting a copy of x."""
    return np.stack([np.bincount(labels, weights=col, minlength=k) for col in xt], axis=1)


def _lloyd(
    x: np.ndarray, centroids: np.ndarray, iterations: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, list[float]]:
    k = len(centroids)
    labels, dists = _nearest(x, centroids)
    inertia = [float(dists.sum())]
    xt = np.ascontiguousarray(x.T)
    done = 0
    for step in range(1, iterations + 1):
        done = step
        counts = np.bincount(labels, minlength=k)
        empty = np.flatnonzero(counts == 0)
        centroids = (_centroid_sums(xt, labels, k) / np.maximum(counts, 1)[:, None]).astype(np.float32)
        if len(empty):  # restart each empty cluster at a point far from its centre
            far = np.argsort(-dists)[: len(empty)]
            centroids[empty] = x[far]
        new_labels, dists = _nearest(x, centroids)
        inertia.append(float(dists.sum()))
        settled = np.array_equal(new_labels, labels) and not len(empty)
        labels = new_labels
        if settled:
            break
    return centroids, labels, dists, done, inertia


def kmeans(x: np.ndarray, k: int, iterations: int = 30, seed: int = 0, n_init: int = 8) -> KMeansResult:
    """Lloyd's k-means. ``n_init`` greedy k-means++ seedings, each refined by a few Lloyd steps on
    the seeding subsample; the one of lowest inertia starts the full run. (One seeding misses a
    small, well-separated group about half the time when it holds ~1% of the points.)"""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if len(x) == 0 or k == 0:
        return KMeansResult(
            np.zeros(0, np.int32), np.zeros((0, x.shape[1]), np.float32), np.zeros(0, np.float32), 0
        )
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    k = min(k, len(x))
    rng = np.random.default_rng(seed)
    size = min(len(x), max(_SEEDING_MIN, _SEEDING_PER_CENTRE * k))
    sample = x[rng.choice(len(x), size=size, replace=False)]
    best, best_inertia = None, np.inf
    for _ in range(max(1, n_init)):
        centres, _, _, _, inertia = _lloyd(sample, _seed(sample, k, rng), _INIT_ITERATIONS)
        if inertia[-1] < best_inertia:
            best, best_inertia = centres, inertia[-1]
    centroids, labels, dists, done, inertia = _lloyd(x, best, iterations)
    return KMeansResult(labels, centroids, dists, done, inertia)


def allocate(sizes: np.ndarray, budget: int, mode: str, seed: int = 0) -> np.ndarray:
    """Records to take from each cluster; sums to ``min(budget, sizes.sum())``.

    While the budget is at least the number of non-empty clusters, every one gets ≥ 1 (coverage
    first). Below that, the largest clusters get one each (ties broken at random).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    budget = int(min(budget, sizes.sum()))
    out = np.zeros(len(sizes), dtype=np.int64)
    nonempty = np.flatnonzero(sizes > 0)
    rng = np.random.default_rng(seed)
    if budget == 0:
        return out
    if budget < len(nonempty):
        order = nonempty[np.lexsort((rng.random(len(nonempty)), -sizes[nonempty]))]
        out[order[:budget]] = 1
        return out
    if mode == "uniform":
        # Water-filling: the highest level L with sum(min(size, L)) <= budget, then one more
        # record each to the largest clusters that still have some, until the budget is spent.
        lo, hi = 0, int(sizes.max())
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if np.minimum(sizes, mid).sum() <= budget:
                lo = mid
            else:
                hi = mid - 1
        out = np.minimum(sizes, lo)
        extra = budget - int(out.sum())
        open_ = np.flatnonzero(sizes > out)
        order = open_[np.lexsort((rng.random(len(open_)), -sizes[open_]))]
        out[order[:extra]] += 1
        return out
    if mode != "proportional":
        raise ValueError(f"unknown allocation {mode!r}; choose proportional or uniform")
    quota = budget * sizes / sizes.sum()
    out = np.minimum(np.maximum(np.floor(quota).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    # Too many after the coverage minimum: take back from clusters furthest above their quota.
    while out.sum() > budget:
        over = np.where(out > 1, out - quota, -np.inf)
        out[int(np.argmax(over))] -= 1
    # Too few: largest remainders first (ties at random).
    remaining = budget - int(out.sum())
    while remaining > 0:
        room = np.flatnonzero(out < sizes)
        rem = (quota - out)[room]
        order = room[np.lexsort((rng.random(len(room)), -rem))]
        take = order[:remaining]
        out[take] += 1
        remaining = budget - int(out.sum())
    return out


@dataclass
class Selection:
    keep: np.ndarray  # (n,) bool
    labels: np.ndarray
    distances: np.ndarray
    sizes: np.ndarray  # records per cluster before
    taken: np.ndarray  # records per cluster after
    budget: int
    k: int
    iterations: int
    inertia: list[float]

    @property
    def coverage(self) -> float:
        nonempty = int((self.sizes > 0).sum())
        return float((self.taken > 0).sum() / nonempty) if nonempty else 1.0


def sample_positions(n: int, params: SelectionParams) -> np.ndarray:
    """The positions k-means is fitted on, ascending: all ``n`` while they fit in
    ``kmeans_sample_rows``, else that many drawn without replacement with ``seed``."""
    if n <= params.kmeans_sample_rows:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng([params.seed, 0x5F7])
    return np.sort(rng.choice(n, size=params.kmeans_sample_rows, replace=False)).astype(np.int64)


def fit(sample: np.ndarray, k: int, params: SelectionParams) -> KMeansResult:
    """k-means on the sample (its rows in position order)."""
    return kmeans(sample, k, params.kmeans_iterations, params.seed, params.kmeans_restarts)


def assign(x: np.ndarray, centroids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's nearest centroid and its squared distance to it. The distance is computed row by
    row (not from the blocked product), so it does not depend on which rows share a block."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not len(x) or not len(centroids):
        return np.zeros(len(x), np.int32), np.zeros(len(x), np.float32)
    if not np.isfinite(x).all():
        raise ValueError("embeddings contain NaN or infinite values")
    labels, _ = _nearest(x, centroids)
    diff = x - centroids[labels]
    return labels, np.einsum("ij,ij->i", diff, diff).astype(np.float32)


def tiebreak(positions: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per position (splitmix64 of the position and seed): the random
    order within a cluster, the same wherever the row is decided."""
    with np.errstate(over="ignore"):
        z = np.asarray(positions, dtype=np.int64).view(np.uint64) + np.uint64(seed) * np.uint64(
            0x632BE59BD9B4E019
        )
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def preference(within: str, quality: np.ndarray | None, distances: np.ndarray) -> np.ndarray:
    """The within-cluster sort key, lowest first: minus the quality (unscored records last), the
    distance to the centroid, or nothing (the tiebreak alone: random)."""
    n = len(distances)
    if within == "quality":
        q = np.full(n, -np.inf) if quality is None else np.asarray(quality, dtype=float)
        return -np.where(np.isnan(q), -np.inf, q)
    if within == "centroid":
        return np.asarray(distances, dtype=float)
    return np.zeros(n)


def choose(
    labels: np.ndarray, primary: np.ndarray, positions: np.ndarray, taken: np.ndarray, seed: int
) -> np.ndarray:
    """Which rows to keep: per cluster, the first ``taken[cluster]`` by (primary, tiebreak,
    position). The rows may be any set of whole clusters, in any order."""
    n = len(labels)
    if not n:
        return np.zeros(0, bool)
    order = np.lexsort((positions, tiebreak(positions, seed), primary, labels))
    sorted_labels = labels[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_labels)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, n]))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - first
    return rank < np.asarray(taken)[labels]


def select(embeddings: np.ndarray, quality: np.ndarray | None, params: SelectionParams) -> Selection:
    """Which records to keep, and the clustering that decided it (the four steps, in memory)."""
    n = len(embeddings)
    budget = params.budget(n)
    k = params.clusters(n, budget)
    embeddings = np.asarray(embeddings, dtype=np.float32)
    km = fit(embeddings[sample_positions(n, params)], k, params)
    k = len(km.centroids) if n else 0
    labels, distances = assign(embeddings, km.centroids)
    sizes = np.bincount(labels, minlength=k) if n else np.zeros(0, np.int64)
    taken = allocate(sizes, budget, params.allocation, params.seed)
    primary = preference(params.within_cluster, quality, distances)
    keep = choose(labels, primary, np.arange(n), taken, params.seed + 1)
    return Selection(keep, labels, distances, sizes, taken, budget, k, km.iterations, km.inertia)


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components (SVD of the centred data)."""
    if len(x) == 0:
        return np.zeros((0, 2), dtype=np.float32)
    centred = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    comps = vt[:2]
    out = centred @ comps.T
    return np.pad(out, ((0, 0), (0, 2 - out.shape[1]))).astype(np.float32)


def selection_plot(embeddings: np.ndarray, keep: np.ndarray, max_points: int = 4000, seed: int = 0) -> str:
    """A small PNG (as a ``data:`` URI) of kept vs dropped records on the first two PCs."""
    from refinery.plots import figure_data_uri, pyplot

    plt = pyplot()
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(embeddings), size=min(len(embeddings), max_points), replace=False)
    xy = pca_2d(np.asarray(embeddings, dtype=np.float32)[idx])
    kept = keep[idx]
    fig, ax = plt.subplots(figsize=(4, 3.2), dpi=80)
    ax.scatter(xy[~kept, 0], xy[~kept, 1], s=4, c="#c8c8c8", label=f"dropped ({int((~keep).sum())})")
    ax.scatter(xy[kept, 0], xy[kept, 1], s=6, c="#d62728", label=f"kept ({int(keep.sum())})")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Record-key embeddings (PCA)", fontsize=9)
    ax.legend(fontsize=7, loc="best", markerscale=2)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    return figure_data_uri(fig)
