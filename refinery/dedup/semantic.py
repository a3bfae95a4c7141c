"""Semantic deduplication, SemDeDup (Abbas et al., 2023), with other partitions as earlier claims.

Documents whose embeddings are nearly parallel say the same thing in other words. SemDeDup makes
the search affordable by clustering the embeddings with k-means and comparing only within a
cluster. Within a cluster the paper's rule (``rule: semdedup``, the default) is, as its authors'
code implements it (facebookresearch/SemDeDup: ``sort_clusters.py`` then ``semdedup.py``; NeMo
Curator's ``semantic/pairwise.py`` and ``identify_duplicates.py`` are the same):

1. order the members by cosine distance to the centroid, **descending** (``which_to_keep: hard``:
   the member furthest from the centroid first); ties here go to reading order;
2. for each member j, M[j] = the highest cosine to *any earlier* member (the column maxima of the
   upper triangle of the similarity matrix: removed members count too);
3. remove j when M[j] ≥ 1 − ε (the authors' code writes ``>``, NeMo Curator ``>=``; they differ only
   at exact equality). So of a group of near-copies the one furthest from the centroid stays, and
   the decision at any ε is a threshold on M: the metadata shows how many would go at other ε.

``rule: first_come`` is Refinery's earlier rule, kept as an option: members in reading order, a
document removed only when it is similar to an already *kept* one, so the earliest copy stays.
It depends on reading order and keeps a document whose only near-copy was itself removed; use
it when "the first copy wins" matters more than matching the paper.

Either way, the documents other partitions kept (``semantic_deduplicated`` outputs on disk, with
their stored embeddings) are claims made before this partition: a document is also removed when a
claim in its cluster reaches 1 − ε, and then ``duplicate_of`` names that claim. Claims are streamed
one fixed-size block at a time (``claims_block_rows``), each block assigned to this partition's
nearest centroids and compared with the members of those clusters in fixed-size tiles, so memory
holds this partition's embeddings plus one block, whatever the size of the rest of the corpus (a
blocked exact scan, not an index). A pair split across clusters is missed, the price SemDeDup pays
for scale. ``duplicate_of`` always names a document that stays: when the member that made a
document a duplicate was itself removed, it names the kept copy that member leads to, and
``similarity`` is the cosine to that kept copy (the reason says which member triggered it).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from refinery import markdown
from refinery.batch import BatchResult, split_batch
from refinery.ids import doc_key
from refinery.kernel.processor import StageProcessor
from refinery.metadata import Json, Markdown
from refinery.names import DOCUMENT_EMBEDDINGS, SEMANTIC_DEDUPLICATED
from refinery.partition_tables import read_schema, table_files
from refinery.quality.embeddings import Embeddings, read_embeddings, text_hash
from refinery.storage import PROVENANCE_KEY, Storage

SEMANTIC_FIELDS = [
    pa.field("semantic_cluster", pa.int32()),
    pa.field("semantic_nn_similarity", pa.float32()),
]
_ROW_BLOCK = 1024


class SemanticDedupParams(BaseModel):
    """SemDeDup's parameters.

    ε has no default in the authors' code (``--eps-list`` is required; ``semdedup_configs.yaml``
    sets none) nor in NeMo Curator (``eps=None``): the paper sweeps it and chooses it by the share of
    the data it removes and the downstream result. 0.07 here (duplicates at cosine ≥ 0.93) is
    Refinery's own choice for all-MiniLM-L6-v2 document embeddings: on the bundled sample it
    catches paraphrases (reordered sentences, substituted words) while distinct articles on one
    topic stay below it (tests/unit/test_quality_semantic.py). Calibrate it on your data with the
    ``removed_at_epsilon`` table of the metadata."""

    epsilon: float = Field(0.07, gt=0, lt=1, description="Duplicates have cosine similarity ≥ 1 - epsilon.")
    rule: Literal["semdedup", "first_come"] = Field(
        "semdedup",
        description="'semdedup': the paper's rule (members ordered by distance to the centroid, furthest "
        "first; removed when similar to any earlier member). 'first_come': reading order, removed only when "
        "similar to a kept document (the earliest copy stays).",
    )
    docs_per_cluster: int = Field(
        1000,
        ge=1,
        description="k-means clusters = ceil(documents / docs_per_cluster) unless clusters is set.",
    )
    clusters: int | None = Field(None, ge=1, description="Fixed number of k-means clusters.")
    kmeans_iterations: int = Field(25, ge=1, description="Lloyd iterations (stops early once stable).")
    kmeans_sample_rows: int = Field(
        100_000,
        ge=1,
        description="k-means is fitted on at most this many vectors, evenly spaced in reading order; every "
        "document then goes to its nearest centroid. The in-process and the distributed paths fit the same "
        "sample, so they decide alike.",
    )
    seed: int = Field(0, description="k-means++ initialisation seed.")
    against_other_sources: bool = Field(
        True, description="Also remove paraphrases of documents that other partitions kept."
    )
    claims_block_rows: int = Field(
        4096, ge=1, description="Other partitions' embeddings are read and compared this many at a time."
    )

    @property
    def threshold(self) -> float:
        return 1.0 - self.epsilon


def sample_positions(n: int, sample_rows: int) -> np.ndarray:
    """At most ``sample_rows`` positions, evenly spaced over ``n`` rows (all of them when n fits):
    the rows k-means is fitted on, the same whether one process holds the partition or workers do."""
    if n <= sample_rows:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, sample_rows).round().astype(np.int64))


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


# -- claims: other partitions' kept documents, in blocks ---------------------------------------
@dataclass
class Claims:
    """Claims held in memory (tests, small runs): ``keys`` name the documents, ``vectors`` their
    unit embeddings. :class:`StoredClaims` streams the same from storage."""

    keys: list[str] = field(default_factory=list)
    vectors: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), dtype=np.float32))
    sources: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)  # source -> why its claims were not used
    block_rows: int = 4096

    def blocks(self) -> Iterator[tuple[list[str], np.ndarray]]:
        for start in range(0, len(self.keys), self.block_rows):
            yield self.keys[start : start + self.block_rows], self.vectors[start : start + self.block_rows]


class StoredClaims:
    """The documents every other partition kept, read from storage one block at a time.

    A partition's kept documents are its ``semantic_deduplicated`` rows; their vectors are in its
    ``document_embeddings`` file, in upstream order, of which the kept rows are a subsequence (the
    stage writes rows in reading order). Both files are walked together, one row group at a time, so
    neither is ever held whole. Partitions embedded with another model or dimension are skipped and said so.
    """

    def __init__(self, storage: Storage, partition: str, model: str, dim: int, block_rows: int = 4096):
        self.storage, self.partition, self.model, self.dim = storage, partition, model, dim
        self.block_rows = block_rows
        self.sources: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    def blocks(self) -> Iterator[tuple[list[str], np.ndarray]]:
        self.sources, self.skipped = {}, {}
        for other in self.storage.partitions(SEMANTIC_DEDUPLICATED):
            if other != self.partition:
                yield from self.partition_blocks(other)

    def partition_blocks(self, other: str) -> Iterator[tuple[list[str], np.ndarray]]:
        """The kept documents of partition ``other`` with their vectors, block by block (recorded in
        ``sources``, or in ``skipped`` with the reason)."""
        files = table_files(self.storage, DOCUMENT_EMBEDDINGS, other)
        if not files:
            self.skipped[other] = "no document_embeddings file"
            return
        fs = self.storage.fs  # a local root's or an object store's: the same walk
        schema = read_schema(self.storage, files)
        model = json.loads((schema.metadata or {}).get(PROVENANCE_KEY, b"{}")).get("model", "unknown")
        dim = schema.field("embedding").type.list_size
        if model != self.model or dim != self.dim:
            self.skipped[other] = f"embedded with {model} (dim {dim}), not {self.model} (dim {self.dim})"
            return
        kept_files = table_files(self.storage, SEMANTIC_DEDUPLICATED, other)
        kept = _column_values(fs, kept_files, "id", self.block_rows)
        want = next(kept, None)
        used = 0
        for batch in _row_group_batches(fs, files, ["id", "embedding"], self.block_rows):
            ids = batch.column("id").to_pylist()
            rows = []
            for r, doc_id in enumerate(ids):
                if doc_id == want:
                    rows.append(r)
                    want = next(kept, None)
            if rows:
                flat = batch.column("embedding").flatten().to_numpy(zero_copy_only=False)
                vectors = np.asarray(flat, dtype=np.float32).reshape(-1, dim)[rows]
                used += len(rows)
                yield [doc_key(other, ids[r]) for r in rows], vectors
        missing = sum(1 for _ in kept) + (want is not None)
        if missing:
            self.skipped[other] = f"{missing} kept documents lack an embedding (stale)"
        self.sources[other] = used


def _row_group_batches(
    filesystem: pafs.FileSystem, files: list[str], columns: list[str], batch_rows: int
) -> Iterator[pa.RecordBatch]:
    """Parquet files (paths on ``filesystem``, in row order) one row group at a time, in batches:
    memory holds one row group (the writer's size; document_embeddings writes 2,000 rows per
    group), where ``iter_batches`` reads ahead."""
    for file in files:  # a single file, a folder's parts, or the parts a manifest lists
        with filesystem.open_input_file(file) as handle:
            parquet = pq.ParquetFile(handle)
            for group in range(parquet.num_row_groups):
                yield from parquet.read_row_group(group, columns=columns).to_batches(max_chunksize=batch_rows)


def _column_values(filesystem: pafs.FileSystem, files: list[str], column: str, batch_rows: int) -> Iterator:
    for batch in _row_group_batches(filesystem, files, [column], batch_rows):
        yield from batch.column(0).to_pylist()


@dataclass
class BestClaims:
    """Per member of this partition: the most similar claim of its cluster (if any was compared)."""

    similarity: np.ndarray  # -inf where no claim was compared
    keys: list[str | None]
    vectors: dict[int, np.ndarray]  # member -> its best claim's vector, kept where it reaches the threshold
    compared: int = 0


def best_claims(
    claims,
    vectors: np.ndarray,
    centroids,
    assign: np.ndarray,
    threshold: float,
    device: str = "cpu",
    tile: int = 1024,
) -> BestClaims:
    """Stream the claims block by block: assign each to this partition's nearest centroid, compare it
    with the members of that cluster in ``tile``-row slices, keep each member's best. Memory: one
    block of claims and one tile × block similarity matrix at a time."""
    import torch

    n = len(vectors)
    best = BestClaims(np.full(n, -np.inf), [None] * n, {})
    members_of = {c: np.flatnonzero(assign == c) for c in np.unique(assign)}
    x = torch.as_tensor(vectors, dtype=torch.float32, device=device)
    for keys, block in claims.blocks():
        if not len(keys):
            continue
        best.compared += len(keys)
        v = torch.as_tensor(np.ascontiguousarray(block), dtype=torch.float32, device=device)
        nearest = _nearest(v, centroids).cpu().numpy()
        for c in np.unique(nearest):
            members = members_of.get(int(c))
            if members is None:
                continue
            cols = np.flatnonzero(nearest == c)
            vc = v[torch.as_tensor(cols, device=device)]
            for start in range(0, len(members), tile):
                rows = members[start : start + tile]
                sims = (x[torch.as_tensor(rows, device=device)] @ vc.T).cpu().numpy()
                j = sims.argmax(axis=1)
                top = sims[np.arange(len(rows)), j]
                better = top > best.similarity[rows]
                for r, t, sim in zip(rows[better], j[better], top[better], strict=True):
                    best.similarity[r] = float(sim)
                    best.keys[r] = keys[cols[t]]
                    if sim >= threshold:
                        best.vectors[int(r)] = np.asarray(block[cols[t]], dtype=np.float32).copy()
                    else:
                        best.vectors.pop(int(r), None)
    return best


# -- decisions ----------------------------------------------------------------------------------
@dataclass
class Decision:
    cluster: int
    similarity: float  # duplicates: cosine to duplicate_of; kept: the nearest other member of its cluster
    neighbour: str | None  # duplicates: the kept copy (duplicate_of); kept: that nearest member (or None)
    duplicate: bool
    nn_similarity: float = 0.0  # highest cosine to another member of its cluster (this partition)
    trigger: str | None = None  # duplicates: the document whose similarity removed it
    trigger_similarity: float = 0.0
    score: float = -math.inf  # what the rule compares with 1 - ε (semdedup: max(M, best claim))


def cluster_decisions(
    cluster: int,
    order: np.ndarray,
    got: dict[str, np.ndarray],
    claim_sim: np.ndarray,
    threshold: float,
    keys: Sequence[str],
    vectors: np.ndarray,
    claim: Callable[[int], tuple[str, np.ndarray]],
) -> list[tuple[int, Decision]]:
    """Each member's decision in the rule's ``order``, as ``(member, Decision)``: a removed member
    names the kept copy it leads to (``claim(member)`` when another source's claim came first, else
    the root of the earlier member that removed it, already resolved since it comes earlier)."""
    out: list[tuple[int, Decision]] = []
    root: list[tuple[str, np.ndarray]] = [("", np.zeros(0))] * len(order)  # kept copy: key, vector
    for pos, m in enumerate(order):
        nn = int(got["nn_arg"][pos])
        nn_key = keys[order[nn]] if nn >= 0 else None
        if not got["removed"][pos]:
            root[pos] = (keys[m], vectors[m])
            sim = float(got["nn_sim"][pos])
            out.append((int(m), Decision(cluster, sim, nn_key, False, sim, score=float(got["score"][pos]))))
            continue
        if claim_sim[pos] >= threshold:  # other partitions' claims came first
            root[pos] = claim(m)
            trigger, trigger_sim = root[pos][0], float(claim_sim[pos])
        else:
            t = int(got["earlier_arg"][pos])
            trigger, trigger_sim = keys[order[t]], float(got["earlier_sim"][pos])
            root[pos] = root[t]  # earlier in the order: already resolved to a kept copy
        kept_key, kept_vector = root[pos]
        decision = Decision(
            cluster,
            float(vectors[m] @ kept_vector),
            kept_key,
            True,
            float(got["nn_sim"][pos]),
            trigger,
            trigger_sim,
            float(got["score"][pos]),
        )
        out.append((int(m), decision))
    return out


@dataclass
class SemanticPlan:
    decisions: dict[str, Decision]
    clusters: int
    claims: object
    seconds_kmeans: float = 0.0
    cluster_sizes: list[int] = field(default_factory=list)
    rule: str = "semdedup"
    claims_compared: int = 0
    seconds_claims: float = 0.0

    @property
    def duplicates(self) -> int:
        return sum(d.duplicate for d in self.decisions.values())

    def removed_at(self, epsilon: float) -> int | None:
        """How many the semdedup rule removes at another ε (a threshold on each document's score)."""
        if self.rule != "semdedup":
            return None
        return sum(d.score >= 1.0 - epsilon for d in self.decisions.values())


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
        raise stale_error(partition, upstream, stale)


def stale_error(partition: str, upstream: str, why: str) -> ValueError:
    """The error for embeddings that are not those of the upstream documents (``why``: how)."""
    return ValueError(
        f"document_embeddings for partition '{partition}' is stale ({why}): re-materialize "
        f"document_embeddings for '{partition}' after {upstream}"
    )


def _tiles(x, order: np.ndarray, tile: int):
    """Row tiles of the cluster's similarity matrix (rows: a tile of members, columns: all), in ``order``."""
    import torch

    xo = x[torch.as_tensor(order, device=x.device)]
    for start in range(0, len(order), tile):
        yield start, (xo[start : start + tile] @ xo.T).cpu().numpy()


def _cluster_semdedup(x, order: np.ndarray, claim_sim: np.ndarray, threshold: float) -> dict:
    """The paper's rule over one cluster in ``order``: M (max cosine to any earlier member) and its
    argmax, the nearest member overall, then removed = max(M, best claim) ≥ threshold."""
    m = len(order)
    earlier_sim = np.full(m, -np.inf)
    earlier_arg = np.full(m, -1)
    nn_sim = np.zeros(m)
    nn_arg = np.full(m, -1)
    for start, sims in _tiles(x, order, _ROW_BLOCK):
        rows = np.arange(start, start + len(sims))
        full = sims.copy()
        full[np.arange(len(rows)), rows] = -np.inf  # not itself
        if m > 1:
            nn_arg[rows] = full.argmax(axis=1)
            nn_sim[rows] = full[np.arange(len(rows)), nn_arg[rows]]
        full[np.arange(m)[None, :] >= rows[:, None]] = -np.inf  # earlier members only
        has = rows > 0
        if has.any():
            arg = full[has].argmax(axis=1)
            earlier_arg[rows[has]] = arg
            earlier_sim[rows[has]] = full[has][np.arange(int(has.sum())), arg]
    score = np.maximum(earlier_sim, claim_sim)
    return {
        "earlier_sim": earlier_sim,
        "earlier_arg": earlier_arg,
        "nn_sim": nn_sim,
        "nn_arg": nn_arg,
        "score": score,
        "removed": score >= threshold,
    }


def _cluster_first_come(x, order: np.ndarray, claim_sim: np.ndarray, threshold: float) -> dict:
    """Refinery's earlier rule over one cluster in reading order: compared with kept members only."""
    m = len(order)
    kept = np.zeros(m, dtype=bool)
    earlier_sim = np.full(m, -np.inf)
    earlier_arg = np.full(m, -1)
    nn_sim = np.zeros(m)
    nn_arg = np.full(m, -1)
    for start, sims in _tiles(x, order, _ROW_BLOCK):
        for r in range(len(sims)):
            i = start + r
            row = sims[r].copy()
            row[i] = -np.inf
            if m > 1:
                nn_arg[i] = int(row.argmax())
                nn_sim[i] = float(row[nn_arg[i]])
            previous = np.flatnonzero(kept[:i])
            if len(previous):
                t = int(row[previous].argmax())
                earlier_arg[i], earlier_sim[i] = int(previous[t]), float(row[previous[t]])
            kept[i] = max(claim_sim[i], earlier_sim[i]) < threshold
    return {
        "earlier_sim": earlier_sim,
        "earlier_arg": earlier_arg,
        "nn_sim": nn_sim,
        "nn_arg": nn_arg,
        "score": np.maximum(earlier_sim, claim_sim),
        "removed": ~kept,
    }


def _dedup_order(x, members: np.ndarray, centroid, rule: str) -> np.ndarray:
    """Positions into ``members`` in the rule's order: furthest from the centroid first (semdedup),
    ties by reading order; or reading order (first_come)."""
    if rule == "first_come":
        return np.arange(len(members))
    import torch

    to_centroid = (x[torch.as_tensor(members, device=x.device)] @ centroid).cpu().numpy().astype(np.float64)
    # Rounded below float32 noise, so identical vectors tie (a matrix product may differ in the last
    # bit by row) and the earliest in reading order comes first: of exact copies, the first stays.
    return np.lexsort((np.arange(len(members)), np.round(to_centroid, 6)))  # ascending: furthest first


def plan(
    source: str,
    ids: list[str],
    vectors: np.ndarray,
    claims,
    params: SemanticDedupParams,
    device: str = "cpu",
) -> SemanticPlan:
    """Decide, for every document of the partition, keep or duplicate-of (``claims``: an object with
    ``blocks()`` yielding (keys, vectors), such as :class:`Claims` or :class:`StoredClaims`)."""
    import time

    import torch

    started = time.perf_counter()
    n = len(ids)
    if n == 0:
        return SemanticPlan({}, 0, claims, rule=params.rule)
    k = params.clusters or math.ceil(n / params.docs_per_cluster)
    sample = vectors[sample_positions(n, params.kmeans_sample_rows)]
    centroids, _ = spherical_kmeans(sample, k, params.kmeans_iterations, params.seed, device)
    # Every document to its nearest final centroid (what k-means returns once it has converged;
    # also when it stopped at kmeans_iterations, and for rows outside the sample).
    x = torch.as_tensor(vectors, dtype=torch.float32, device=device)
    assign = _nearest(x, centroids).cpu().numpy()
    seconds_kmeans = time.perf_counter() - started
    k = centroids.shape[0]
    threshold = params.threshold
    claims_started = time.perf_counter()
    if params.against_other_sources:
        best = best_claims(claims, vectors, centroids, assign, threshold, device)
    else:
        best = BestClaims(np.full(n, -np.inf), [None] * n, {})
    seconds_claims = time.perf_counter() - claims_started
    keys = [doc_key(source, i) for i in ids]
    decide = _cluster_semdedup if params.rule == "semdedup" else _cluster_first_come
    decisions: dict[str, Decision] = {}
    sizes = np.bincount(assign, minlength=k).tolist()
    for c in range(k):
        members = np.flatnonzero(assign == c)  # ascending: reading order
        if not len(members):
            continue
        order = members[_dedup_order(x, members, centroids[c], params.rule)]
        claim_sim = best.similarity[order]
        got = decide(x, order, claim_sim, threshold)

        def claim(m: int) -> tuple[str, np.ndarray]:  # the earlier claim of member m
            return best.keys[m], best.vectors[int(m)]

        for m, decision in cluster_decisions(c, order, got, claim_sim, threshold, keys, vectors, claim):
            decisions[ids[m]] = decision
    return SemanticPlan(
        decisions, k, claims, seconds_kmeans, sizes, params.rule, best.compared, seconds_claims
    )


def epsilon_grid(epsilon: float) -> list[float]:
    """The ε values the metadata shows removal counts for (the chosen one included)."""
    return sorted({0.01, 0.03, 0.05, 0.07, 0.1, 0.15, 0.2, epsilon})


def semantic_report(
    params: SemanticDedupParams,
    clusters: int,
    sizes: Sequence[int],
    figures: dict,
    sources: dict[str, int],
    skipped: dict[str, str],
    origins: dict[str, int],
    removed_at: dict[float, int] | None,
    total: int,
) -> dict:
    """The stage's metadata, from figures the in-process and the distributed paths both have:
    cluster sizes (empty clusters counted), claims per source, removals per origin and per ε."""
    out = {
        "rule": params.rule,
        "similarity_threshold": round(params.threshold, 6),
        "clusters": clusters,
        "cluster_size_max": int(max(sizes)) if len(sizes) else 0,
        "cluster_size_median": float(np.median(sizes)) if len(sizes) else 0.0,
        **figures,
        "claims_from_sources": Markdown(
            markdown.table(["source", "kept documents compared"], sorted(sources.items()))
            if sources
            else "_none: no other partition has been deduplicated yet_"
        ),
        "claims_skipped": Json(skipped),
        "duplicates_within_or_across": Markdown(
            markdown.table(["kept copy in", "removed here"], sorted(origins.items()))
        ),
    }
    if removed_at is not None:
        rows = [
            (f"{e:g}", f"{1 - e:.2f}", removed_at[e], f"{removed_at[e] / total:.1%}" if total else "")
            for e in sorted(removed_at)
        ]
        out["removed_at_epsilon"] = Markdown(
            markdown.table(["ε", "cosine ≥", "would be removed", "share"], rows)
        )
    return out


def origin_label(neighbour: str, source: str) -> str:
    """Where a removed document's kept copy is, as the metadata's table names it."""
    origin = neighbour.partition("/")[0]
    return f"{origin} (this partition)" if origin == source else origin


class SemanticDeduper(StageProcessor):
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
        other partitions' kept documents as earlier claims (streamed), k-means, then the decisions."""
        emb = read_embeddings(storage, source)
        check_alignment(emb, storage, upstream, source)
        claims = StoredClaims(storage, source, emb.model, emb.dim, params.claims_block_rows)
        decided = plan(source, emb.ids, emb.vectors, claims, params, device)
        return cls(decided, params, source, device, emb.model)

    def report(self) -> dict:
        decided, claims = self.plan, self.plan.claims
        total = len(decided.decisions)
        removed_at = (
            {e: decided.removed_at(e) for e in epsilon_grid(self.params.epsilon)}
            if decided.rule == "semdedup"
            else None
        )
        return semantic_report(
            self.params,
            decided.clusters,
            decided.cluster_sizes,
            {
                "kmeans_seconds": round(decided.seconds_kmeans, 3),
                "claims_compared": decided.claims_compared,
                "claims_seconds": round(decided.seconds_claims, 3),
                "device": self.device,
                "embeddings_model": self.embeddings_model,
            },
            getattr(claims, "sources", {}),
            getattr(claims, "skipped", {}),
            self.origins(),
            removed_at,
            total,
        )

    def origins(self) -> dict[str, int]:
        """How many documents were removed in favour of a copy in each source (this one included)."""
        counts: dict[str, int] = {}
        for d in self.plan.decisions.values():
            if d.duplicate and d.neighbour:
                key = origin_label(d.neighbour, self.source)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def _detail(self, d: Decision) -> str:
        eps, threshold = self.params.epsilon, self.params.threshold
        text = (
            f"cosine {d.trigger_similarity:.3f} ≥ {threshold:.3f} (ε={eps:g}) with {d.trigger} "
            f"(cluster {d.cluster})"
        )
        if d.trigger != d.neighbour:
            text += f"; {d.trigger} is itself removed: its kept copy {d.neighbour}, cosine {d.similarity:.3f}"
        return text

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        return self.apply(frame, [self.plan.decisions[doc_id] for doc_id in frame["id"].tolist()])

    def apply(self, frame: pd.DataFrame, decided: Sequence[Decision]) -> BatchResult:
        """The frame's rows with their decisions (one per row, in order): kept, or removed with the reason."""
        reasons, duplicate_of, similarity, clusters, nn = [], [], [], [], []
        for d in decided:
            clusters.append(d.cluster)
            nn.append(d.nn_similarity)
            if d.duplicate:
                reasons.append(("semantic_duplicate", self._detail(d)))
                duplicate_of.append(d.neighbour)
                similarity.append(d.similarity)
            else:
                reasons.append(None)
                duplicate_of.append(None)
                similarity.append(d.nn_similarity)
        out = frame.assign(semantic_cluster=clusters, semantic_nn_similarity=nn)
        return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": similarity})


# The per-cluster steps, public for the distributed path (refinery.dedup.semantic_shuffle, semantic_tasks).
dedup_order = _dedup_order
CLUSTER_RULES = {"semdedup": _cluster_semdedup, "first_come": _cluster_first_come}
