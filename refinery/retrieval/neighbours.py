"""Nearest already-kept document in other partitions, through the index, in bounded memory.

Semantic dedup asks, for every document of the partition it is deduplicating, "which document that
another partition kept is closest, and how close?". Loading every other partition's kept embeddings
and multiplying them against the partition (what ``load_claims`` + ``plan`` do today) needs memory in
proportion to the whole corpus. :func:`nearest_neighbours` answers the same question segment by
segment and block by block:

- exact (``exact=True``): each other partition's vectors are streamed from its embeddings file in
  blocks of ``vector_block`` rows and multiplied against ``query_block`` queries at a time, keeping a
  running best per query: memory is one vector block, one ``query_block × vector_block`` product
  and three numbers per query, whatever the corpus size; the answer equals brute force (ties go to
  the first partition in name order, then the first row);
- approximate (default): each segment's HNSW graph is walked with the allowed rows as a filter
  (faiss ``IDSelectorBitmap``: only documents that partition kept can be returned); a query the walk
  finds nothing for is answered exactly over that segment. The graph is memory-mapped, so memory
  stays at the query blocks and one bit per row.

:func:`kept_neighbours` is the SemDeDup call: "allowed" is the ids in each other partition's
``semantic_deduplicated`` output, and partitions that cannot be compared are listed with the reason
(as ``Claims.skipped`` does).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from refinery.fs import read_parquet_files
from refinery.ids import doc_key
from refinery.retrieval.index import VectorIndex
from refinery.retrieval.segment import Segment
from refinery.storage import Storage

DEFAULT_QUERY_BLOCK = 1024
DEFAULT_VECTOR_BLOCK = 16_384


@dataclass
class Neighbours:
    """Per query: the cosine to its nearest allowed document and where that document is."""

    similarity: np.ndarray  # (n,) float32; -inf where no partition had an allowed document
    partition: list[str | None]
    id: list[str | None]
    compared: dict[str, int] = field(default_factory=dict)  # partition -> allowed documents searched
    skipped: dict[str, str] = field(default_factory=dict)  # partition -> why it was not searched
    fallback_queries: int = 0  # approximate mode: queries the filtered graph walk found nothing for

    @property
    def keys(self) -> list[str | None]:
        return [
            doc_key(p, i) if p is not None else None for p, i in zip(self.partition, self.id, strict=True)
        ]


def _allowed_mask(segment: Segment, allowed: Iterable[str] | pa.Array | None) -> np.ndarray | None:
    if allowed is None:
        return None
    values = (
        allowed if isinstance(allowed, pa.Array | pa.ChunkedArray) else pa.array(list(allowed), pa.string())
    )
    return np.asarray(pc.is_in(segment.ids, value_set=values).to_numpy(zero_copy_only=False), dtype=bool)


def _exact_best(
    segment: Segment,
    queries: np.ndarray,
    mask: np.ndarray | None,
    query_block: int,
    vector_block: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact best allowed row and cosine per query over one segment, streaming its vectors."""
    n = len(queries)
    best = np.full(n, -np.inf, dtype=np.float32)
    row = np.full(n, -1, dtype=np.int64)
    for start, block in segment.iter_vectors(vector_block):
        rows = np.arange(start, start + len(block))
        if mask is not None:
            keep = mask[start : start + len(block)]
            block, rows = block[keep], rows[keep]
        if not len(block):
            continue
        for qs in range(0, n, query_block):
            sims = queries[qs : qs + query_block] @ block.T
            j = sims.argmax(axis=1)
            top = sims[np.arange(len(j)), j]
            better = top > best[qs : qs + query_block]  # strictly: the earlier row wins a tie
            best[qs : qs + query_block][better] = top[better]
            row[qs : qs + query_block][better] = rows[j[better]]
    return best, row


def _approximate_best(
    segment: Segment,
    queries: np.ndarray,
    mask: np.ndarray | None,
    expansion: int | None,
    query_block: int,
    vector_block: int,
) -> tuple[np.ndarray, np.ndarray, int]:
    n = len(queries)
    best = np.full(n, -np.inf, dtype=np.float32)
    row = np.full(n, -1, dtype=np.int64)
    for qs in range(0, n, query_block):
        rows, scores = segment.search(queries[qs : qs + query_block], 1, expansion, allowed=mask)
        best[qs : qs + len(rows)], row[qs : qs + len(rows)] = scores[:, 0], rows[:, 0]
    missing = np.flatnonzero(row < 0)
    if len(missing) and (mask is None or mask.any()):
        b, r = _exact_best(segment, queries[missing], mask, query_block, vector_block)
        best[missing], row[missing] = b, r
    return best, row, len(missing)


def nearest_neighbours(
    index: VectorIndex,
    queries: np.ndarray,
    *,
    model: str,
    exclude: Iterable[str] = (),
    allowed: Mapping[str, Iterable[str] | pa.Array] | None = None,
    exact: bool = False,
    expansion: int | None = None,
    query_block: int = DEFAULT_QUERY_BLOCK,
    vector_block: int = DEFAULT_VECTOR_BLOCK,
) -> Neighbours:
    """For each query vector, its nearest document in the index's other partitions, with the cosine.

    ``allowed``: partition -> the ids that may be returned (other partitions are not searched);
    ``None``: every document of every partition not in ``exclude``. Partitions whose vectors come
    from another model than ``model`` (or another dimension) are skipped with the reason; in exact
    mode a stale segment (its embeddings file changed) raises, in approximate mode it is skipped.
    """
    queries = np.ascontiguousarray(np.atleast_2d(queries), dtype=np.float32)
    n = len(queries)
    excluded = set(exclude)
    names = [p for p in index.partitions() if p not in excluded]
    if allowed is not None:
        names = [p for p in names if p in allowed]
    result = Neighbours(np.full(n, -np.inf, dtype=np.float32), [None] * n, [None] * n)
    best_seg = np.full(n, -1, dtype=np.int64)
    best_row = np.full(n, -1, dtype=np.int64)
    opened: list[Segment] = []
    for name in names:
        manifest = index.manifest(name)
        if manifest is None:
            continue
        if manifest.model != model or manifest.dim != queries.shape[1]:
            result.skipped[name] = (
                f"embedded with {manifest.model} (dim {manifest.dim}), not {model} (dim {queries.shape[1]})"
            )
            continue
        segment = index.open(name)
        if not segment.is_fresh():
            if exact:
                segment.require_fresh()
            result.skipped[name] = "its vector index segment is stale (embeddings re-materialized since)"
            continue
        mask = _allowed_mask(segment, None if allowed is None else allowed[name])
        result.compared[name] = segment.rows if mask is None else int(mask.sum())
        if result.compared[name] == 0 or n == 0:
            continue
        if exact:
            sim, row = _exact_best(segment, queries, mask, query_block, vector_block)
        else:
            sim, row, fallback = _approximate_best(
                segment, queries, mask, expansion, query_block, vector_block
            )
            result.fallback_queries += fallback
        better = sim > result.similarity  # partitions in name order: the first wins a tie
        result.similarity[better] = sim[better]
        best_seg[better] = len(opened)
        best_row[better] = row[better]
        opened.append(segment)
    for j, segment in enumerate(opened):
        hits = np.flatnonzero(best_seg == j)
        for i, doc_id in zip(hits.tolist(), segment.id_of(best_row[hits]), strict=True):
            result.partition[i], result.id[i] = segment.partition, doc_id
    return result


def kept_ids(storage: Storage, asset: str, partition: str) -> pa.Array:
    """The ids a partition kept at ``asset`` (its output: a file, parts, or an object store's
    manifest parts), as an Arrow array."""
    files = [str(f) for f in storage.files(asset, partition)]
    return read_parquet_files(storage.fs, files, columns=["id"]).column("id").combine_chunks()


def kept_neighbours(
    storage: Storage,
    index: VectorIndex,
    partition: str,
    queries: np.ndarray,
    *,
    model: str,
    kept_asset: str = "semantic_deduplicated",
    exact: bool = False,
    **kwargs,
) -> Neighbours:
    """SemDeDup's claim check: nearest document kept at ``kept_asset`` by every other partition.

    Replaces ``load_claims`` + the claim product of ``semantic_dedup.plan``: the same candidates (each
    other partition's kept documents that have an embedding, of the same model), in bounded memory.
    """
    allowed: dict[str, pa.Array] = {}
    skipped: dict[str, str] = {}
    indexed = set(index.partitions())
    for other in storage.partitions(kept_asset):
        if other == partition:
            continue
        if other not in indexed:
            skipped[other] = "not in the vector index (materialize vector_index for it)"
            continue
        allowed[other] = kept_ids(storage, kept_asset, other)
    found = nearest_neighbours(
        index, queries, model=model, exclude=[partition], allowed=allowed, exact=exact, **kwargs
    )
    for other, ids in allowed.items():
        if other in found.compared and found.compared[other] < len(ids):
            found.skipped[other] = (
                f"{len(ids) - found.compared[other]} kept documents lack an embedding (stale)"
            )
    found.skipped.update(skipped)
    return found
