"""Semantic deduplication, SemDeDup style (Abbas et al., 2023), first come, first served.

Documents whose embeddings are nearly parallel say the same thing in other words. SemDeDup makes
the search affordable by clustering the embeddings with k-means and comparing only within a
cluster; a document is a semantic duplicate when its cosine similarity to a kept document reaches
``1 - epsilon``.

Which copy survives follows the rest of Refinery's dedup: **first come, first served**. The
documents other partitions kept (``semantic_deduplicated`` outputs on disk, with their stored
embeddings) are claims made before this partition, and within the partition the first in reading
order wins. So paraphrases across sources are removed from whichever source is materialized later,
and re-materializing a partition gives the same result as long as the others have not changed.
Other partitions' kept documents are assigned to this partition's nearest centroid and compared in
that cluster only; a pair split across clusters is missed, the price SemDeDup pays for scale.

(SemDeDup itself keeps, in each group, the document least similar to the cluster centroid; we keep
the earliest, so that ``duplicate_of`` always names a document that stays in the corpus.)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery import markdown
from refinery.batch import BatchResult, split_batch
from refinery.dedup.keys import doc_key
from refinery.metadata import Json, Markdown
from refinery.names import SEMANTIC_DEDUPLICATED
from refinery.quality.embeddings import Embeddings, read_embeddings, text_hash
from refinery.storage import Storage

SEMANTIC_FIELDS = [
    pa.field("semantic_cluster", pa.int32()),
    pa.field("semantic_nn_similarity", pa.float32()),
]
_ROW_BLOCK = 1024


class SemanticDedupParams(BaseModel):
    """SemDeDup's parameters. ε = 0.07 (duplicates at cosine ≥ 0.93) is one of the thresholds of the
    paper's LAION-440M runs (it removed about a third of that data) and the one the authors' code
    keeps as its final setting; with all-MiniLM-L6-v2 document embeddings it catches paraphrases
    (reordered sentences, substituted words) while distinct articles on one topic stay below it."""

    epsilon: float = Field(0.07, gt=0, lt=1, description="Duplicates have cosine similarity ≥ 1 - epsilon.")
    docs_per_cluster: int = Field(
        1000,
        ge=1,
        description="k-means clusters = ceil(documents / docs_per_cluster) unless clusters is set.",
    )
    clusters: int | None = Field(None, ge=1, description="Fixed number of k-means clusters.")
    kmeans_iterations: int = Field(25, ge=1, description="Lloyd iterations (stops early once stable).")
    seed: int = Field(0, description="k-means++ initialisation seed.")
    against_other_sources: bool = Field(
        True, description="Also remove paraphrases of documents that other partitions kept."
    )

    @property
    def threshold(self) -> float:
        return 1.0 - self.epsilon


def spherical_kmeans(
    vectors: np.ndarray, k: int, iterations: int, seed: int, device: str = "cpu"
) -> tuple[object, np.ndarray]:
    """k-means on unit vectors with cosine similarity (centroids renormalised), k-means++ seeding.

    Returns (centroids (k, d) float32 tensor on ``device``, assignment (n,) int64 numpy array).
    """
    import torch

    x = torch.as_tensor(vectors, dtype=torch.float32, device=device)
    n = x.shape[0]
    k = max(1, min(k, n))
    gen = torch.Generator(device="cpu").manual_seed(seed)
    first = int(torch.randint(n, (1,), generator=gen))
    centroids = [x[first]]
    best = (x @ x[first]).clamp(max=1.0)
    for _ in range(1, k):
        weights = (1.0 - best).clamp(min=0).double().cpu()
        if float(weights.sum()) <= 0:
            break  # every point coincides with a chosen centroid
        pick = int(torch.multinomial(weights, 1, generator=gen))
        centroids.append(x[pick])
        best = torch.maximum(best, x @ x[pick])
    c = torch.stack(centroids)
    assign = torch.full((n,), -1, dtype=torch.long, device=device)
    for _ in range(iterations):
        new = _nearest(x, c)
        if torch.equal(new, assign):
            break
        assign = new
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        norms = sums.norm(dim=1, keepdim=True)
        c = torch.where(norms > 0, sums / norms.clamp(min=1e-12), c)  # empty cluster: keep its centroid
    return c, assign.cpu().numpy()


def _nearest(x: object, centroids: object) -> object:
    import torch

    out = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    for start in range(0, x.shape[0], 65_536):
        out[start : start + 65_536] = (x[start : start + 65_536] @ centroids.T).argmax(dim=1)
    return out


@dataclass
class Claims:
    """Documents other partitions kept, with their embeddings: what this partition is checked against."""

    keys: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    sources: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why its claims were not used


def load_claims(storage: Storage, partition: str, model: str, dim: int) -> Claims:
    """Kept documents of every other partition that has a semantic_deduplicated output."""
    keys: list[str] = []
    blocks: list[np.ndarray] = []
    claims = Claims()
    for other in storage.partitions(SEMANTIC_DEDUPLICATED):
        if other == partition:
            continue
        try:
            emb = read_embeddings(storage, other)
        except FileNotFoundError:
            claims.skipped[other] = "no document_embeddings file"
            continue
        if emb.model != model or emb.dim != dim:
            claims.skipped[other] = f"embedded with {emb.model} (dim {emb.dim}), not {model} (dim {dim})"
            continue
        kept = set(storage.read(SEMANTIC_DEDUPLICATED, other, columns=["id"])["id"].tolist())
        rows = [i for i, doc_id in enumerate(emb.ids) if doc_id in kept]
        if len(rows) < len(kept):
            claims.skipped[other] = f"{len(kept) - len(rows)} kept documents lack an embedding (stale)"
        keys += [doc_key(other, emb.ids[i]) for i in rows]
        blocks.append(emb.vectors[rows])
        claims.sources[other] = len(rows)
    claims.keys = keys
    claims.vectors = np.concatenate(blocks) if blocks else np.zeros((0, dim), dtype=np.float32)
    return claims


@dataclass
class Decision:
    cluster: int
    similarity: (
        float  # duplicates: cosine to the kept copy; kept: highest cosine to a kept one of its partition
    )
    neighbour: str | None  # that document's key (None when the partition had none before it)
    duplicate: bool


@dataclass
class SemanticPlan:
    decisions: dict[str, Decision]
    clusters: int
    claims: Claims
    seconds_kmeans: float = 0.0
    cluster_sizes: list[int] = field(default_factory=list)

    @property
    def duplicates(self) -> int:
        return sum(d.duplicate for d in self.decisions.values())


def check_alignment(emb: Embeddings, storage: Storage, upstream: str, partition: str) -> None:
    """The stored embeddings must be those of exactly the upstream documents, in order (streamed)."""
    position = 0
    stale = None
    for batch in storage.iter_batches(upstream, partition, columns=["id", "text"]):
        ids, texts = batch["id"].tolist(), batch["text"].tolist()
        stop = position + len(ids)
        if emb.ids[position:stop] != ids:
            stale = "the documents differ"
        elif emb.text_hashes[position:stop] != [text_hash(t) for t in texts]:
            stale = "a document's text changed"
        if stale:
            break
        position = stop
    if stale is None and position != len(emb.ids):
        stale = f"it has {len(emb.ids)} rows for {position} documents"
    if stale:
        raise ValueError(
            f"document_embeddings for partition '{partition}' is stale ({stale}): re-materialize "
            f"document_embeddings for '{partition}' after {upstream}"
        )


def plan(
    source: str,
    ids: list[str],
    vectors: np.ndarray,
    claims: Claims,
    params: SemanticDedupParams,
    device: str = "cpu",
) -> SemanticPlan:
    """Decide, for every document of the partition in reading order, keep or duplicate-of."""
    import time

    import torch

    started = time.perf_counter()
    n = len(ids)
    if n == 0:
        return SemanticPlan({}, 0, claims)
    k = params.clusters or math.ceil(n / params.docs_per_cluster)
    centroids, assign = spherical_kmeans(vectors, k, params.kmeans_iterations, params.seed, device)
    seconds_kmeans = time.perf_counter() - started
    k = centroids.shape[0]
    use_claims = params.against_other_sources and len(claims.keys) > 0
    if use_claims:
        claim_x = torch.as_tensor(claims.vectors, dtype=torch.float32, device=device)
        claim_assign = _nearest(claim_x, centroids).cpu().numpy()
    threshold = params.threshold
    keys = [doc_key(source, i) for i in ids]
    decisions: dict[str, Decision] = {}
    sizes = np.bincount(assign, minlength=k).tolist()
    for c in range(k):
        members = np.flatnonzero(assign == c)  # ascending: reading order
        if not len(members):
            continue
        x = torch.as_tensor(vectors[members], dtype=torch.float32, device=device)
        # Claims (other partitions' kept documents) decide only when they reach the threshold; the
        # similarity reported for a kept document is to its own partition, so a partition's output
        # does not change when unrelated documents arrive elsewhere.
        claim_sim = np.full(len(members), -np.inf)
        claim_key: list[str | None] = [None] * len(members)
        if use_claims:
            rows = np.flatnonzero(claim_assign == c)
            if len(rows):
                sims = (x @ claim_x[rows].T).cpu().numpy()
                j = sims.argmax(axis=1)
                claim_sim = sims[np.arange(len(members)), j].astype(float)
                claim_key = [claims.keys[rows[t]] for t in j]
        own_sim = np.zeros(len(members))
        own_key: list[str | None] = [None] * len(members)
        kept = np.zeros(len(members), dtype=bool)
        for start in range(0, len(members), _ROW_BLOCK):
            stop = min(start + _ROW_BLOCK, len(members))
            block = (x[start:stop] @ x[:stop].T).cpu().numpy()  # rows: this block; columns: all earlier
            for r in range(stop - start):
                i = start + r
                earlier = np.flatnonzero(kept[:i])
                if len(earlier):
                    sims = block[r, earlier]
                    t = int(sims.argmax())
                    own_sim[i], own_key[i] = float(sims[t]), keys[members[earlier[t]]]
                kept[i] = max(claim_sim[i], own_sim[i] if own_key[i] else -np.inf) < threshold
        for pos, m in enumerate(members):
            if kept[pos]:
                decisions[ids[m]] = Decision(c, float(own_sim[pos]), own_key[pos], False)
            elif claim_sim[pos] >= threshold and claim_sim[pos] >= own_sim[pos]:
                decisions[ids[m]] = Decision(
                    c, float(claim_sim[pos]), claim_key[pos], True
                )  # earlier claim wins
            else:
                decisions[ids[m]] = Decision(c, float(own_sim[pos]), own_key[pos], True)
    return SemanticPlan(decisions, k, claims, seconds_kmeans, sizes)


class SemanticDeduper:
    """Applies a plan to the upstream batches (the plan needs the whole partition's embeddings)."""

    def __init__(
        self,
        plan: SemanticPlan,
        params: SemanticDedupParams,
        source: str = "",
        device: str = "cpu",
        embeddings_model: str = "",
    ):
        self.plan, self.params = plan, params
        self.source, self.device, self.embeddings_model = source, device, embeddings_model

    @classmethod
    def for_partition(
        cls, storage: Storage, upstream: str, source: str, params: SemanticDedupParams, device: str
    ) -> SemanticDeduper:
        """Plan the partition: its stored embeddings (checked against ``upstream``'s documents),
        other partitions' kept documents as earlier claims, k-means, then the decisions."""
        emb = read_embeddings(storage, source)
        check_alignment(emb, storage, upstream, source)
        claims = (
            load_claims(storage, source, emb.model, emb.dim) if params.against_other_sources else Claims()
        )
        decided = plan(source, emb.ids, emb.vectors, claims, params, device)
        return cls(decided, params, source, device, emb.model)

    def report(self) -> dict:
        decided, claims = self.plan, self.plan.claims
        sizes = decided.cluster_sizes
        return {
            "similarity_threshold": round(self.params.threshold, 6),
            "clusters": decided.clusters,
            "cluster_size_max": max(sizes) if sizes else 0,
            "cluster_size_median": float(np.median(sizes)) if sizes else 0.0,
            "kmeans_seconds": round(decided.seconds_kmeans, 3),
            "device": self.device,
            "embeddings_model": self.embeddings_model,
            "claims_from_sources": Markdown(
                markdown.table(["source", "kept documents compared"], sorted(claims.sources.items()))
                if claims.sources
                else "_none: no other partition has been deduplicated yet_"
            ),
            "claims_skipped": Json(claims.skipped),
            "duplicates_within_or_across": Markdown(
                markdown.table(["kept copy in", "removed here"], sorted(self.origins().items()))
            ),
        }

    def origins(self) -> dict[str, int]:
        """How many documents were removed in favour of a copy in each source (this one included)."""
        counts: dict[str, int] = {}
        for d in self.plan.decisions.values():
            if d.duplicate and d.neighbour:
                origin = d.neighbour.partition("/")[0]
                key = f"{origin} (this partition)" if origin == self.source else origin
                counts[key] = counts.get(key, 0) + 1
        return counts

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        reasons, duplicate_of, similarity, clusters, nn = [], [], [], [], []
        eps, threshold = self.params.epsilon, self.params.threshold
        for doc_id in frame["id"].tolist():
            d = self.plan.decisions[doc_id]
            clusters.append(d.cluster)
            nn.append(d.similarity)
            if d.duplicate:
                reasons.append(
                    (
                        "semantic_duplicate",
                        f"cosine {d.similarity:.3f} ≥ {threshold:.3f} (ε={eps:g}) with {d.neighbour} "
                        f"(cluster {d.cluster})",
                    )
                )
                duplicate_of.append(d.neighbour)
                similarity.append(d.similarity)
            else:
                reasons.append(None)
                duplicate_of.append(None)
                similarity.append(d.similarity)
        out = frame.assign(semantic_cluster=clusters, semantic_nn_similarity=nn)
        return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": similarity})
