"""Importance weights against a target set from hashed n-gram features (DSIR).

Xie et al. 2023, "Data Selection for Language Models via Importance Resampling": fit a bag of
hashed unigrams and bigrams to the target set and to the raw corpus (10,000 buckets, add-one
smoothing), give each document the log likelihood ratio of its features under the two, then
resample documents with probability proportional to the importance weight (Gumbel top-k,
without replacement). Here the resampled documents are aggregated to domains: a domain's weight
is its share of the resampled tokens, so a domain that resembles the target gains weight.

Features reuse the dedup library's vectorised word hashing (:class:`MinHasher`'s shingle
hashes: the same simplification — case, punctuation, digits, accents — and no Python loop per
word), bucketed modulo ``num_buckets``. The raw distribution needs one pass over the corpus and
the weights a second; memory is one float and one int per document.

By default the log weight is length-normalised: the plain sum grows with length, so a few long
documents would take every draw. It is the mean over the document's features times the corpus's
mean number of features per document, so a typical document keeps the paper's scale (against
which the Gumbel noise of the resampling is small) while length itself does not decide.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from pydantic import BaseModel, Field

from refinery.dedup.minhash import MinHasher


class DsirParams(BaseModel):
    num_buckets: int = Field(10_000, description="Hash buckets of the n-gram features (the paper's 10k).")
    ngrams: list[int] = Field([1, 2], description="Word n-gram orders hashed into the buckets.")
    smoothing: float = Field(1.0, description="Pseudo-count added to every bucket (add-one smoothing).")
    length_normalize: bool = Field(True, description="Log weight per feature rather than per document.")
    resample_fraction: float = Field(
        0.2,
        description="Share of the corpus drawn by importance to measure each domain's share: smaller "
        "concentrates the weights on target-like domains (a domain with no document drawn gets 0).",
    )
    seed: int = Field(0, description="Seeds the Gumbel draw.")


class HashedNgrams:
    """Bucket ids of every word n-gram of every text, with per-text offsets."""

    def __init__(self, num_buckets: int, ngrams: list[int]):
        if num_buckets < 1 or not ngrams:
            raise ValueError("num_buckets must be ≥ 1 and ngrams non-empty")
        self.num_buckets = num_buckets
        self.hashers = [MinHasher(num_perm=1, ngram=n) for n in sorted(set(ngrams))]

    def features(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """(buckets, owner): the bucket of each feature and the index of the text it came from."""
        buckets, owners = [], []
        for hasher in self.hashers:
            hashes, offsets = hasher.shingle_hashes(texts)
            counts = np.diff(np.append(offsets, len(hashes)))
            buckets.append((hashes % np.uint32(self.num_buckets)).astype(np.int64))
            owners.append(np.repeat(np.arange(len(texts)), counts))
        return np.concatenate(buckets), np.concatenate(owners)

    def counts(self, texts: list[str]) -> np.ndarray:
        buckets, _ = self.features(texts)
        return np.bincount(buckets, minlength=self.num_buckets).astype(np.float64)


def log_probabilities(counts: np.ndarray, smoothing: float) -> np.ndarray:
    smoothed = counts + smoothing
    return np.log(smoothed / smoothed.sum())


class ImportanceModel:
    """log p_target(bucket) − log p_raw(bucket), fitted from the two bags of n-grams."""

    def __init__(self, params: DsirParams):
        self.params = params
        self.ngrams = HashedNgrams(params.num_buckets, params.ngrams)
        self.target_counts = np.zeros(params.num_buckets)
        self.raw_counts = np.zeros(params.num_buckets)
        self.raw_documents = 0

    def fit_target(self, texts: Iterable[list[str]]) -> None:
        for batch in texts:
            self.target_counts += self.ngrams.counts(batch)

    def fit_raw(self, texts: list[str]) -> None:
        self.raw_counts += self.ngrams.counts(texts)
        self.raw_documents += len(texts)

    @property
    def mean_features(self) -> float:
        return float(self.raw_counts.sum()) / max(self.raw_documents, 1)

    @property
    def log_ratio(self) -> np.ndarray:
        if not self.target_counts.any():
            raise ValueError("the target set has no text: DSIR needs target documents")
        p = self.params
        return log_probabilities(self.target_counts, p.smoothing) - log_probabilities(
            self.raw_counts, p.smoothing
        )

    def log_weights(self, texts: list[str], log_ratio: np.ndarray | None = None) -> np.ndarray:
        """Per document: the sum of its features' log ratios (length-normalised: the mean, times
        the corpus's mean number of features per document)."""
        ratio = self.log_ratio if log_ratio is None else log_ratio
        buckets, owner = self.ngrams.features(texts)
        total = np.bincount(owner, weights=ratio[buckets], minlength=len(texts))
        if self.params.length_normalize:
            total = (
                total / np.maximum(np.bincount(owner, minlength=len(texts)), 1) * max(self.mean_features, 1.0)
            )
        return total


def gumbel_top_k(log_weights: np.ndarray, k: int, seed: int = 0) -> np.ndarray:
    """Indices of a weighted sample without replacement of size k (Gumbel-max trick)."""
    if k >= len(log_weights):
        return np.arange(len(log_weights))
    keys = log_weights + np.random.default_rng(seed).gumbel(size=len(log_weights))
    return np.argpartition(-keys, k)[:k]


@dataclass
class DsirDomains:
    domains: list[str]
    weights: np.ndarray  # share of resampled tokens per domain
    mean_log_weight: np.ndarray
    documents: np.ndarray
    resampled_documents: np.ndarray


def domain_weights_from_documents(
    log_weights: np.ndarray, domains: np.ndarray, tokens: np.ndarray, params: DsirParams
) -> DsirDomains:
    """Resample documents by importance and measure each domain's share of the resampled tokens."""
    names = sorted(set(domains.tolist()))
    index = {d: i for i, d in enumerate(names)}
    dom = np.fromiter((index[d] for d in domains), dtype=np.int64, count=len(domains))
    k = max(1, round(params.resample_fraction * len(log_weights))) if len(log_weights) else 0
    picked = gumbel_top_k(log_weights, k, params.seed) if k else np.zeros(0, np.int64)
    resampled_tokens = np.bincount(dom[picked], weights=tokens[picked], minlength=len(names))
    total = resampled_tokens.sum()
    weights = resampled_tokens / total if total > 0 else np.full(len(names), 1 / max(len(names), 1))
    sums = np.bincount(dom, weights=log_weights, minlength=len(names))
    counts = np.bincount(dom, minlength=len(names))
    return DsirDomains(
        names,
        weights,
        sums / np.maximum(counts, 1),
        counts,
        np.bincount(dom[picked], minlength=len(names)),
    )
