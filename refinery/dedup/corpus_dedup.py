"""Corpus-wide near-duplicate removal in one batch pass (backfills), as datatrove and NeMo Curator do.

The incremental path (:mod:`refinery.dedup.fuzzy`) decides document by document against an index
of kept documents. For a backfill of a whole corpus, the batch pass is simpler and parallel:

1. **signatures** per batch of documents (:func:`signatures_of`, a function over one batch);
2. **band keys** as ``(band, bucket, doc)`` rows (:func:`band_rows`), **grouped** by ``(band,
   bucket)`` into candidate pairs (:func:`candidate_pairs`): all pairs in a bucket of up to
   ``max_bucket_all_pairs`` documents; in a larger bucket (templated pages) each member is paired
   with the bucket's first ``anchors`` members and with its neighbour in document order, as
   NeMo Curator and datatrove pair bucket members, so the work stays linear in the bucket size;
3. **duplicate edges**: candidate pairs verified by estimated Jaccard ≥ threshold
   (:func:`verify_pairs`); the unverified ones (LSH false candidates) are dropped and counted;
4. **connected components** of the edges (:func:`refinery.dedup.components.connected_components`);
5. **one document kept per component**: the first in (source order, row order), the same "first
   come" order the incremental path follows when sources are materialized in sorted order.

Each step is a separate function over arrays or tables: the distributed path
(:mod:`refinery.dedup.corpus_shuffle`) runs the same per-bucket pairing (:func:`candidate_pairs`) in
its reducers, over Parquet shuffles.

Batch mode removes a superset of what the incremental path removes: components chain, so with
A ~ B ~ C (A and C below the threshold) the incremental path keeps A and C (C is compared only with
kept documents, and A is not close enough), while batch mode keeps only A.

Memory, for n documents with P permutations and b bands: the signatures, ``4·P·n`` bytes (512 B per
document at P = 128), plus document keys; the band rows of one band at a time, ``n`` rows of
(band, bucket, doc) = 18 B each, with their sort; candidate pairs and edges, 16 B per unique pair;
the union-find, 8 B per document. Texts are not kept: only one batch is held at a time.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from pydantic import Field

from refinery.dedup.banding import band_bucket
from refinery.dedup.components import connected_components, keep_first
from refinery.dedup.fuzzy import FuzzyDedupParams
from refinery.dedup.minhash import MinHasher
from refinery.ids import doc_key

VERIFY_CHUNK = 1 << 16  # candidate pairs compared per numpy pass (about 64 MB of signature rows)


class CorpusDedupParams(FuzzyDedupParams):
    max_bucket_all_pairs: int = Field(
        64, description="Buckets of up to this many documents compare every pair of their members."
    )
    anchors: int = Field(
        4,
        description="In larger buckets, each member is compared with the first this many members and its "
        "neighbour.",
    )


@dataclass
class PairStats:
    band_rows: int = 0
    shared_buckets: int = 0  # buckets holding two or more documents
    large_buckets: int = 0  # of those, buckets above max_bucket_all_pairs
    large_bucket_docs: int = 0
    candidate_pairs: int = 0  # unique pairs over every band

    def add(self, other: PairStats) -> None:
        self.band_rows += other.band_rows
        self.shared_buckets += other.shared_buckets
        self.large_buckets += other.large_buckets
        self.large_bucket_docs += other.large_bucket_docs


@dataclass
class CorpusDedupResult:
    """``table``: one row per document (source, id, component, component_size, kept, duplicate_of,
    similarity), in input order; ``stats``: counts and seconds per step."""

    table: pd.DataFrame
    stats: dict = field(default_factory=dict)


def signatures_of(frame: pd.DataFrame, hasher: MinHasher) -> np.ndarray:
    """Step 1, over one batch: (len(frame), num_perm) uint32 signatures of its ``text`` column."""
    return hasher.signatures(frame["text"].tolist())


def band_rows(
    signatures: np.ndarray, bands: int, rows: int, first_doc: int = 0, only_band: int | None = None
) -> pd.DataFrame:
    """Step 2a: ``(band, bucket, doc)`` rows, one per document and band (or for ``only_band``).
    ``doc`` numbers the documents from ``first_doc`` in first-come order."""
    which = range(bands) if only_band is None else [only_band]
    n = len(signatures)
    return pd.DataFrame(
        {
            "band": np.repeat(np.asarray(which, dtype=np.int16), n),
            "bucket": np.concatenate([band_bucket(signatures, band, rows) for band in which]),
            "doc": np.tile(np.arange(first_doc, first_doc + n, dtype=np.int64), len(which)),
        }
    )


def candidate_pairs(
    rows: pd.DataFrame, max_bucket_all_pairs: int = 64, anchors: int = 4
) -> tuple[pd.DataFrame, PairStats]:
    """Step 2b: group the rows by (band, bucket) and pair the members of every shared bucket.

    Returns unique ``(a, b)`` document pairs with ``a < b`` and what the grouping saw. Works on any
    table whose groups are complete (all rows, one band, or one reducer's share of the buckets)."""
    stats = PairStats(band_rows=len(rows))
    if len(rows) < 2:
        return pd.DataFrame({"a": np.zeros(0, np.int64), "b": np.zeros(0, np.int64)}), stats
    band = rows["band"].to_numpy()
    bucket = rows["bucket"].to_numpy()
    doc = rows["doc"].to_numpy(dtype=np.int64)
    order = np.lexsort((doc, bucket, band))
    band, bucket, doc = band[order], bucket[order], doc[order]
    new_group = np.ones(len(doc), dtype=bool)
    new_group[1:] = (band[1:] != band[:-1]) | (bucket[1:] != bucket[:-1])
    starts = np.flatnonzero(new_group)
    sizes = np.diff(np.append(starts, len(doc)))
    shared = sizes >= 2
    large = sizes > max_bucket_all_pairs
    stats.shared_buckets = int(shared.sum())
    stats.large_buckets = int(large.sum())
    stats.large_bucket_docs = int(sizes[large].sum())
    group_of = np.repeat(np.arange(len(starts)), sizes)
    start_of = starts[group_of]
    end_of = start_of + sizes[group_of]
    firsts, seconds = [], []
    # Small shared buckets: every pair, one offset at a time over the rows that still have a partner.
    pos = np.flatnonzero(shared[group_of] & ~large[group_of])
    offset = 1
    while len(pos):
        pos = pos[pos + offset < end_of[pos]]
        if len(pos):
            firsts.append(doc[pos])
            seconds.append(doc[pos + offset])
        offset += 1
    # Large buckets: each member with the first `anchors` members and with its neighbour.
    big = np.flatnonzero(large[group_of])
    for k in range(anchors):
        later = big[big > start_of[big] + k]
        firsts.append(doc[start_of[later] + k])
        seconds.append(doc[later])
    step = big[big + 1 < end_of[big]]
    firsts.append(doc[step])
    seconds.append(doc[step + 1])
    a = np.concatenate(firsts) if firsts else np.zeros(0, np.int64)
    b = np.concatenate(seconds) if seconds else np.zeros(0, np.int64)
    pairs = unique_pairs(a, b)
    stats.candidate_pairs = len(pairs)
    return pairs, stats


def unique_pairs(a: np.ndarray, b: np.ndarray) -> pd.DataFrame:
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    both = np.unique(np.stack([lo, hi], axis=1), axis=0) if len(lo) else np.zeros((0, 2), np.int64)
    return pd.DataFrame({"a": both[:, 0].astype(np.int64), "b": both[:, 1].astype(np.int64)})


def verify_pairs(
    pairs: pd.DataFrame, signatures: np.ndarray, threshold: float, first_doc: int = 0
) -> tuple[pd.DataFrame, int]:
    """Step 3: the candidate pairs whose estimated Jaccard reaches the threshold, with it, and how
    many candidates were dropped (LSH false candidates). ``signatures[i]`` is document
    ``first_doc + i``."""
    a = pairs["a"].to_numpy(dtype=np.int64)
    b = pairs["b"].to_numpy(dtype=np.int64)
    perms = signatures.shape[1]
    equal = np.empty(len(a), dtype=np.int32)
    for lo in range(0, len(a), VERIFY_CHUNK):
        hi = lo + VERIFY_CHUNK
        equal[lo:hi] = np.count_nonzero(
            signatures[a[lo:hi] - first_doc] == signatures[b[lo:hi] - first_doc], axis=1
        )
    similarity = equal / perms
    ok = similarity >= threshold
    edges = pd.DataFrame({"a": a[ok], "b": b[ok], "similarity": similarity[ok].astype(np.float32)})
    return edges, int((~ok).sum())


def dedup_table(keys: pd.DataFrame, signatures: np.ndarray, roots: np.ndarray) -> pd.DataFrame:
    """Step 5: per document, its component (the number of its first document), the component's
    size, whether it is kept, and for the others the kept document and the estimated Jaccard with it."""
    kept, sizes = keep_first(roots)
    perms = signatures.shape[1]
    similarity = np.full(len(roots), np.nan, dtype=np.float32)
    dropped = np.flatnonzero(~kept)
    for lo in range(0, len(dropped), VERIFY_CHUNK):
        rows = dropped[lo : lo + VERIFY_CHUNK]
        similarity[rows] = np.count_nonzero(signatures[rows] == signatures[roots[rows]], axis=1) / perms
    sources = keys["source"].astype(str).to_numpy()
    ids = keys["id"].astype(str).to_numpy()
    duplicate_of = np.full(len(roots), None, dtype=object)
    duplicate_of[dropped] = [
        doc_key(s, i) for s, i in zip(sources[roots[dropped]], ids[roots[dropped]], strict=True)
    ]
    return pd.DataFrame(
        {
            "source": keys["source"].to_numpy(),
            "id": keys["id"].to_numpy(),
            "component": roots,
            "component_size": sizes,
            "kept": kept,
            "duplicate_of": duplicate_of,
            "similarity": similarity,
        }
    )


def pairs_by_band(
    signatures: np.ndarray, bands: int, rows: int, max_bucket_all_pairs: int = 64, anchors: int = 4
) -> tuple[pd.DataFrame, PairStats]:
    """Step 2 in this process: the band rows of one band at a time, grouped by
    :func:`candidate_pairs`; unique pairs over every band (the shuffle's ``pairs`` reducers do the
    same grouping, over their shares of whole buckets)."""
    stats = PairStats()
    pair_parts = []
    for band in range(bands):
        pairs, part = candidate_pairs(
            band_rows(signatures, bands, rows, only_band=band), max_bucket_all_pairs, anchors
        )
        stats.add(part)
        pair_parts.append(pairs)
    merged = pd.concat(pair_parts, ignore_index=True)  # bands >= 1
    pairs = unique_pairs(merged["a"].to_numpy(), merged["b"].to_numpy())
    stats.candidate_pairs = len(pairs)
    return pairs, stats


def dedup_signed(
    keys: pd.DataFrame,
    signatures: np.ndarray,
    pairs: pd.DataFrame,
    pair_stats: PairStats,
    params: CorpusDedupParams,
    seconds: dict | None = None,
) -> CorpusDedupResult:
    """Steps 3–5 over signed documents (``keys``: source, id per signature row, first-come order) and
    their candidate pairs, however steps 1 and 2 were computed."""
    index = params.index_params()
    clock = time.perf_counter
    t2 = clock()
    edges, dropped = verify_pairs(pairs, signatures, params.threshold)
    t3 = clock()
    roots = connected_components(len(signatures), edges["a"].to_numpy(), edges["b"].to_numpy())
    t4 = clock()
    table = dedup_table(keys, signatures, roots)
    t5 = clock()
    removed = int((~table["kept"]).sum())
    return CorpusDedupResult(
        table,
        {
            "documents": len(table),
            "bands": index["bands"],
            "rows": index["rows"],
            "band_rows": pair_stats.band_rows,
            "shared_buckets": pair_stats.shared_buckets,
            "large_buckets": pair_stats.large_buckets,
            "large_bucket_documents": pair_stats.large_bucket_docs,
            "candidate_pairs": pair_stats.candidate_pairs,
            "verified_edges": len(edges),
            "unverified_edges_dropped": dropped,
            "components": int((table["component_size"][table["kept"]] > 1).sum()),
            "removed": removed,
            "signature_bytes": int(signatures.nbytes),
            "seconds": {
                **(seconds or {}),
                "verify": t3 - t2,
                "components": t4 - t3,
                "table": t5 - t4,
            },
        },
    )


def sign_frames(
    frames: Iterable[tuple[str, pd.DataFrame]], hasher: MinHasher
) -> tuple[pd.DataFrame, np.ndarray]:
    """Step 1 in this process: (keys, signatures) of ``(source, frame)`` batches, in order."""
    sig_parts, key_parts = [], []
    for source, frame in frames:
        sig_parts.append(signatures_of(frame, hasher))
        key_parts.append(pd.DataFrame({"source": source, "id": frame["id"].astype(str).to_numpy()}))
    signatures = np.concatenate(sig_parts) if sig_parts else np.zeros((0, hasher.num_perm), np.uint32)
    del sig_parts
    return document_keys(key_parts), signatures


def document_keys(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """The (source, id) frames of the batches as one table, ``source`` categorical."""
    keys = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame({"source": [], "id": []})
    keys["source"] = keys["source"].astype("category")
    return keys


def corpus_dedup(frames: Iterable[tuple[str, pd.DataFrame]], params: CorpusDedupParams) -> CorpusDedupResult:
    """Every step over ``(source, frame)`` batches given in first-come order (sources sorted, rows in
    reading order); frames need ``id`` and ``text``. Only signatures and keys stay in memory."""
    index = params.index_params()
    hasher = MinHasher(params.num_perm, params.ngram, params.seed)
    clock = time.perf_counter
    t0 = clock()
    keys, signatures = sign_frames(frames, hasher)
    t1 = clock()
    pairs, stats = pairs_by_band(
        signatures, index["bands"], index["rows"], params.max_bucket_all_pairs, params.anchors
    )
    t2 = clock()
    return dedup_signed(
        keys, signatures, pairs, stats, params, {"signatures": t1 - t0, "bands_and_pairs": t2 - t1}
    )
