"""Near-duplicate removal with MinHash-LSH, verified by estimated Jaccard similarity.

For each batch: signatures for every document, then one atomic claim per chunk of documents
(:meth:`refinery.dedup.lsh_index.FuzzyIndex.claim`): in reading order, each document is compared
with the kept documents that share a band bucket with it, in the index or earlier in the same batch.
A document is dropped only if a candidate's estimated Jaccard similarity reaches the threshold; the
most similar kept document (ties: smallest key) is named. Every other document enters the index in
the same step, so a concurrent run that reaches the index later sees it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from refinery.batch import BatchResult, split_batch
from refinery.dedup.claims import ClaimBatchParams
from refinery.dedup.lsh_index import FuzzyRun, lsh_params
from refinery.dedup.minhash import MinHasher
from refinery.kernel.processor import StageProcessor

FUZZY_FIELDS = [pa.field("near_dup_similarity", pa.float32())]


class FuzzyDedupParams(ClaimBatchParams):
    num_perm: int = Field(128, description="MinHash permutations.")
    ngram: int = Field(5, description="Words per shingle.")
    threshold: float = Field(0.8, description="Jaccard similarity at which documents are near-duplicates.")
    seed: int = Field(1, description="Seed of the permutations (must match the index).")
    recall: float = Field(
        0.9,
        description="Probability that a pair exactly at the threshold becomes an LSH candidate; the banding "
        "(bands × rows) is the one with the fewest false candidates that reaches it (must match the index).",
    )

    def index_params(self) -> dict:
        return lsh_params(self.num_perm, self.ngram, self.threshold, self.seed, self.recall)


def signature_function(index_params: dict) -> Callable[[pd.DataFrame], np.ndarray]:
    """What an engine's worker runs to sign a partition ahead of the claims: the index's MinHash
    family (permutations, shingles, seed), one batch of texts at a time."""
    hasher = MinHasher(index_params["num_perm"], index_params["ngram"], index_params["seed"])
    return lambda frame: hasher.signatures(frame["text"].tolist())


class SignatureSource(Protocol):
    """Signatures computed ahead, handed out in row order."""

    def take(self, n: int) -> np.ndarray: ...


class FuzzyDeduper(StageProcessor):
    """The batch processor of fuzzy dedup over one partition's :class:`FuzzyRun`.

    ``signatures``, when given, are the partition's signatures in row order, computed ahead (on an
    engine's workers, by :func:`signature_function`): an array, or a reader with ``take(n)`` that
    streams them from the parts the workers wrote
    (:class:`refinery.dedup.signature_parts.SignatureParts`); each batch takes its rows' from the
    front. Otherwise each batch is signed here. Claims are made here either way, in reading order.
    """

    def __init__(self, claims: FuzzyRun, signatures: np.ndarray | SignatureSource | None = None):
        self.claims = claims
        self.threshold = claims.index.threshold
        self.hasher = claims.index.hasher
        self._ahead = signatures

    def _signatures(self, frame: pd.DataFrame) -> np.ndarray:
        if self._ahead is None:
            return self.hasher.signatures(frame["text"].tolist())
        if not isinstance(self._ahead, np.ndarray):
            return self._ahead.take(len(frame))
        if len(self._ahead) < len(frame):
            raise ValueError(
                f"{len(self._ahead)} precomputed signatures left for a batch of {len(frame)} rows: "
                "the partition changed after it was signed"
            )
        sigs, self._ahead = self._ahead[: len(frame)], self._ahead[len(frame) :]
        return sigs

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        sigs = self._signatures(frame)
        outcome = self.claims.claim(frame["id"].tolist(), sigs)
        reasons = [
            None
            if owner is None
            else ("near_duplicate", f"estimated Jaccard {sim:.2f} ≥ {self.threshold:.2f} with {owner}")
            for owner, sim in zip(outcome.owner, outcome.similarity, strict=True)
        ]
        similarity = outcome.similarity.tolist()
        out = frame.assign(near_dup_similarity=similarity)
        return split_batch(out, reasons, {"duplicate_of": outcome.owner, "similarity": similarity})
