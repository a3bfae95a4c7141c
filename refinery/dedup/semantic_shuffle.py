"""Semantic dedup sharded by cluster: k-means on a sample, assignment in blocks, the rule per cluster.

:func:`refinery.dedup.semantic.plan` fits k-means on every vector of the partition and decides all
clusters in one process. Here the same decisions are made one cluster at a time:

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
decision (tests/unit/test_semantic_shuffle.py). With a smaller sample the clusters differ (a sample
is what lets step 1 run on one machine at corpus scale), and the rule within each is the same.
With ``engine`` set to a Ray engine, step 4 runs as a Ray Data ``groupby("cluster").map_groups``
over the shuffled rows, one cluster per call on the workers.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import pandas as pd

from refinery.dedup.semantic import (
    CLUSTER_RULES,
    Decision,
    SemanticDedupParams,
    SemanticPlan,
    cluster_decisions,
    dedup_order,
    sample_positions,
    spherical_kmeans,
)

__all__ = ["assign", "decide_cluster", "decide_group", "plan_by_cluster", "sample_positions", "shuffled"]
from refinery.ids import doc_key

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


def shuffled(
    keys: list[str], vectors: np.ndarray, assignment: np.ndarray, claim_keys, claim_vectors, claim_assignment
) -> pd.DataFrame:
    """The shuffle's rows: one per member (kind 0, reading position) and claim (kind 1, stream
    position), with its cluster, key and vector, sorted by (cluster, kind, position)."""
    frame = pd.DataFrame(
        {
            "cluster": np.concatenate([assignment, claim_assignment]).astype(np.int64),
            "kind": np.r_[np.zeros(len(keys), np.int8), np.ones(len(claim_keys), np.int8)],
            "position": np.r_[np.arange(len(keys)), np.arange(len(claim_keys))],
            "key": list(keys) + list(claim_keys),
            "vector": list(np.asarray(vectors, dtype=np.float32))
            + list(np.asarray(claim_vectors, dtype=np.float32)),
        }
    )
    return frame.sort_values(["cluster", "kind", "position"], kind="stable", ignore_index=True)


def decide_group(group: pd.DataFrame, centroids: np.ndarray, params: SemanticDedupParams) -> pd.DataFrame:
    """Step 4 for one cluster's shuffled rows: a row per member with its decision's fields."""
    group = group.sort_values(["kind", "position"], kind="stable")
    members, claims = group[group["kind"] == 0], group[group["kind"] == 1]
    if not len(members):
        return pd.DataFrame(
            {"position": pd.Series([], dtype=np.int64), "decision": pd.Series([], dtype=object)}
        )
    cluster = int(group["cluster"].iloc[0])
    dim = centroids.shape[1]
    decisions = decide_cluster(
        cluster,
        members["key"].tolist(),
        np.stack(members["vector"].to_numpy()).reshape(-1, dim),
        claims["key"].tolist(),
        np.stack(claims["vector"].to_numpy()).reshape(-1, dim)
        if len(claims)
        else np.zeros((0, dim), np.float32),
        centroids[cluster],
        params,
    )
    import pickle

    return pd.DataFrame(
        {"position": members["position"].to_numpy(), "decision": [pickle.dumps(d) for d in decisions]}
    )


def plan_by_cluster(
    source: str,
    ids: list[str],
    vectors: np.ndarray,
    claims,
    params: SemanticDedupParams,
    sample_rows: int | None = None,
    engine: Any = None,
) -> SemanticPlan:
    """``plan``'s decisions, k-means fitted on a sample and each cluster decided on its own (on the
    engine's workers when ``engine`` is a Ray engine)."""
    import pickle

    started = time.perf_counter()
    n = len(ids)
    if n == 0:
        return SemanticPlan({}, 0, claims, rule=params.rule)
    k = params.clusters or math.ceil(n / params.docs_per_cluster)
    sample = vectors[sample_positions(n, sample_rows or params.kmeans_sample_rows)]
    centroids, _ = spherical_kmeans(sample, k, params.kmeans_iterations, params.seed)
    centroids = centroids.cpu().numpy()
    seconds_kmeans = time.perf_counter() - started
    assignment = assign(vectors, centroids)
    claim_keys: list[str] = []
    claim_parts: list[np.ndarray] = []
    if params.against_other_sources:
        for block_keys, block in claims.blocks():
            claim_keys += block_keys
            claim_parts.append(np.asarray(block, dtype=np.float32))
    dim = vectors.shape[1]
    claim_vectors = np.concatenate(claim_parts) if claim_parts else np.zeros((0, dim), np.float32)
    claim_assignment = assign(claim_vectors, centroids) if len(claim_keys) else np.zeros(0, np.int64)
    keys = [doc_key(source, i) for i in ids]
    rows = shuffled(keys, vectors, assignment, claim_keys, claim_vectors, claim_assignment)
    if engine is not None and getattr(engine, "name", "") == "ray":
        decided = _decide_on_ray(engine, rows, centroids, params)
    else:
        decided = pd.concat(
            [decide_group(group, centroids, params) for _, group in rows.groupby("cluster", sort=True)],
            ignore_index=True,
        )
    decisions = {
        ids[int(p)]: pickle.loads(d) for p, d in zip(decided["position"], decided["decision"], strict=True)
    }
    sizes = np.bincount(assignment, minlength=len(centroids)).tolist()
    return SemanticPlan(
        decisions, len(centroids), claims, seconds_kmeans, sizes, params.rule, len(claim_keys), 0.0
    )


def _decide_on_ray(engine: Any, rows: pd.DataFrame, centroids: np.ndarray, params: SemanticDedupParams):
    import ray.data

    engine.connect()
    shuffle = ray.data.from_pandas(rows).groupby("cluster")
    out = shuffle.map_groups(
        decide_group,
        batch_format="pandas",
        fn_kwargs={"centroids": centroids, "params": params},
        num_cpus=engine.cpus_per_worker,
    )
    return out.to_pandas()
