"""Near-duplicate removal with MinHash-LSH, verified by estimated Jaccard similarity.

For each batch: signatures for every document, one batched query of the persistent index,
then documents in order against those candidates and against the kept documents of the same
batch (a small in-memory band table). A document is dropped only if a candidate's estimated
Jaccard similarity reaches the threshold; the most similar kept document (ties: smallest key)
is named. Kept documents enter the persistent index when the batch ends.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.dedup.keys import doc_key
from refinery.dedup.lsh_index import FuzzyIndex, lsh_params

FUZZY_FIELDS = [pa.field("near_dup_similarity", pa.float32())]


class FuzzyDedupParams(BaseModel):
    num_perm: int = Field(128, description="MinHash permutations.")
    ngram: int = Field(5, description="Words per shingle.")
    threshold: float = Field(0.8, description="Jaccard similarity at which documents are near-duplicates.")
    seed: int = Field(1, description="Seed of the permutations (must match the index).")

    def index_params(self) -> dict:
        return lsh_params(self.num_perm, self.ngram, self.threshold, self.seed)


class FuzzyDeduper:
    def __init__(self, index: FuzzyIndex, source: str, threshold: float):
        self.index, self.source, self.threshold = index, source, threshold
        self.hasher = index.hasher

    def process(self, frame: pd.DataFrame) -> BatchResult:
        sigs = self.hasher.signatures(frame["text"].tolist())
        keys = [doc_key(self.source, d).encode() for d in frame["id"].tolist()]
        band_keys = self.index.band_keys(sigs)
        candidates = self.index.query(band_keys)
        known = self.index.signatures(sorted(set().union(*candidates))) if len(candidates) else {}
        batch_tables: list[dict[bytes, list[int]]] = [{} for _ in band_keys]

        reasons, duplicate_of, similarity, best_seen, kept = [], [], [], [], []
        for i, sig in enumerate(sigs):
            bands = [per_band[i] for per_band in band_keys]
            pool = {k: known[k] for k in candidates[i] if k in known}
            for table, band in zip(batch_tables, bands, strict=True):
                for j in table.get(band, ()):
                    pool[keys[j]] = sigs[j]
            best_key, best = None, 0.0
            for key in sorted(pool):
                sim = float(np.count_nonzero(pool[key] == sig)) / len(sig)
                if sim > best:
                    best_key, best = key, sim
            if best_key is not None and best >= self.threshold:
                name = best_key.decode()
                reasons.append(
                    ("near_duplicate", f"estimated Jaccard {best:.2f} ≥ {self.threshold:.2f} with {name}")
                )
                duplicate_of.append(name)
            else:
                reasons.append(None)
                duplicate_of.append(None)
                kept.append(i)
                for table, band in zip(batch_tables, bands, strict=True):
                    table.setdefault(band, []).append(i)
            similarity.append(best)
            best_seen.append(best)
        self.index.insert(self.source, [keys[i] for i in kept], sigs[kept])
        out = frame.assign(near_dup_similarity=best_seen)
        return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": similarity})
