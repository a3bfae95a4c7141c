"""Semantic dedup sharded by cluster: the per-cluster steps the distributed path's tasks run.

:func:`refinery.dedup.semantic.plan` fits k-means on every vector of the partition and decides all
clusters in one process. :mod:`refinery.dedup.semantic_tasks` makes the same decisions one cluster
at a time, with these two functions on the workers:

1. **fit**: spherical k-means (the same :func:`~refinery.dedup.semantic.spherical_kmeans`, seed and
   iterations) on a sample of at most ``sample_rows`` vectors, evenly spaced in reading order;
2. **assign**: each member, and each claim (a document another partition kept), goes to its nearest
   centroid, block by block (what workers do, each on its own rows);
3. **shuffle**: rows are grouped by cluster (members in reading order, claims in stream order);
4. **decide**: each cluster alone runs the paper's rule (or ``first_come``) exactly as ``plan``
   does: the members' order by distance to the centroid, each member's best claim of its cluster
   (the first in stream order on ties), the rule's scores, and every removed document resolved to
   the kept copy it leads to.

Memory for step 4 is one cluster (its members' and claims' vectors and one tile of its similarity
matrix), whatever the size of the partition: the largest cluster bounds it. With ``sample_rows``
at least the partition's size, the centroids and assignment are ``plan``'s, and so is every
decision (tests/unit/test_semantic_tasks.py). With a smaller sample the clusters differ (a sample
is what lets step 1 run on one machine at corpus scale), and the rule within each is the same.
"""

from __future__ import annotations

import numpy as np

from refinery.dedup.semantic import (
    CLUSTER_RULES,
    Decision,
    SemanticDedupParams,
    cluster_decisions,
    dedup_order,
)

__all__ = ["assign", "decide_cluster"]

ASSIGN_BLOCK = 65_536


def assign(vectors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """The nearest centroid of each vector (cosine on unit vectors), block by block."""
    import torch

    c = torch.as_tensor(centroids, dtype=torch.float32)
    out = np.empty(len(vectors), dtype=np.int64)
    for start in range(0, len(vectors), ASSIGN_BLOCK):
        v = torch.as_tensor(np.ascontiguousarray(vectors[start : start + ASSIGN_BLOCK]), dtype=torch.float32)
        out[start : start + len(v)] = (v @ c.T).argmax(dim=1).numpy()
    return out


def decide_cluster(
    cluster: int,
    member_keys: list[str],
    member_vectors: np.ndarray,
    claim_keys: list[str],
    claim_vectors: np.ndarray,
    centroid: np.ndarray,
    params: SemanticDedupParams,
) -> list[Decision]:
    """One cluster's decisions, members in reading order (the rule and resolution of ``plan``)."""
    import torch

    x = torch.as_tensor(np.ascontiguousarray(member_vectors), dtype=torch.float32)
    m = len(member_keys)
    threshold = params.threshold
    best_sim = np.full(m, -np.inf)
    best_arg = np.full(m, -1)
    if len(claim_keys) and params.against_other_sources:
        sims = (x @ torch.as_tensor(np.ascontiguousarray(claim_vectors), dtype=torch.float32).T).numpy()
        best_arg = sims.argmax(axis=1)  # the first in stream order on ties, as the streamed scan
        best_sim = sims[np.arange(m), best_arg].astype(np.float64)
    order = dedup_order(x, np.arange(m), torch.as_tensor(centroid, dtype=torch.float32), params.rule)
    claim_sim = best_sim[order]
    got = CLUSTER_RULES[params.rule](x, order, claim_sim, threshold)
    decisions: list[Decision | None] = [None] * m

    def claim(i: int) -> tuple[str, np.ndarray]:  # the earlier claim of member i
        return claim_keys[best_arg[i]], np.asarray(claim_vectors[best_arg[i]], dtype=np.float32)

    for i, decision in cluster_decisions(
        cluster, order, got, claim_sim, threshold, member_keys, member_vectors, claim
    ):
        decisions[i] = decision
    return decisions  # type: ignore[return-value]
