"""MinHash signatures for whole batches at once, identical to datasketch's ``affine32`` scheme.

datasketch hashes every shingle with SHA-1 in Python and permutes one document at a time.
Here the batch is one UTF-8 byte array: ASCII documents are simplified by a 256-entry lookup
table (non-ASCII ones by :func:`refinery.text.words.simplify` first), words are found from
byte boundaries, each word's hash is a polynomial hash taken from prefix sums, a shingle's hash
is a wrapped linear combination of its words' hashes, and the 128 permutations run over
cache-sized chunks with one ``minimum.reduceat`` each. No Python loop touches a word.

The permutation step is datasketch's own (MurmurHash3 finaliser, then ``a*h+b mod 2**32`` with
the same seeded parameters), so a signature here equals ``MinHash(hashfunc=shingle_hash)`` fed
:func:`shingles`, and goes straight into a datasketch ``MinHashLSH``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from datasketch import LeanMinHash, MinHash

from refinery.text.words import simplify

SCHEME = "affine32"
MASK64 = (1 << 64) - 1
# Fixed forever: changing any constant changes every signature and invalidates stored indexes.
POLY_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
POLY_INV = pow(POLY_BASE, -1, 1 << 64)
SHINGLE_MULT = np.random.default_rng(0x5EED).integers(1, 2**63, size=32, dtype=np.uint64) * np.uint64(
    2
) + np.uint64(1)
_CHUNK_BYTES = 1 << 17  # bytes of text hashed per numpy pass
_CHUNK_SHINGLES = 8192  # shingles permuted per numpy pass (fits in cache)


def _ascii_table() -> np.ndarray:
    table = np.arange(256, dtype=np.uint8)
    for c in range(128):
        ch = chr(c)
        table[c] = ord(ch.lower()) if ch.isalpha() else ord("0") if ch.isdigit() else 32
    return table  # bytes >= 128 (inside non-ASCII characters) stay word bytes


_TABLE = _ascii_table()


def _fmix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def _fmix32(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint32(16))
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> np.uint32(13))
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> np.uint32(16))


# -- the reference definitions (slow, pure Python): what the vectorised path computes ----------


def word_hash(word: str) -> int:
    acc, power = 0, 1
    for byte in word.encode("utf-8", "surrogatepass"):
        acc = (acc + (byte + 1) * power) & MASK64
        power = (power * POLY_BASE) & MASK64
    return int(_fmix64(np.array([acc], dtype=np.uint64))[0])


def shingle_hash(shingle: Sequence[str]) -> int:
    acc = 0
    for k, w in enumerate(shingle):
        acc = (acc + word_hash(w) * int(SHINGLE_MULT[k])) & MASK64
    return acc >> 32


def shingles(text: str, n: int) -> list[tuple[str, ...]]:
    """The word n-grams of a document (one shingle of all words if it has fewer than n)."""
    w = simplify(text).split()
    if len(w) < n:
        return [tuple(w)]
    return [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]


# -- the vectorised path ---------------------------------------------------------------------


class _Powers:
    """POLY_BASE**i and POLY_INV**i mod 2**64, grown on demand and kept for the process."""

    def __init__(self) -> None:
        self.pow = np.ones(1, dtype=np.uint64)
        self.inv = np.ones(1, dtype=np.uint64)

    def ensure(self, n: int) -> None:
        if len(self.pow) >= n:
            return
        size = max(2 * n, _CHUNK_BYTES + (1 << 16))

        def powers(base: int) -> np.ndarray:
            out = np.full(size, base, dtype=np.uint64)
            out[0] = 1
            with np.errstate(over="ignore"):
                return np.cumprod(out, dtype=np.uint64)

        self.pow, self.inv = powers(POLY_BASE), powers(POLY_INV)


_POWERS = _Powers()


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of every document, in order, and the word count per document."""
    encoded = [t.encode() if t.isascii() else simplify(t).encode("utf-8", "surrogatepass") for t in texts]
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b" ".join(encoded), dtype=np.uint8)
    mapped = _TABLE[buf]
    is_word = mapped != 32
    edges = np.diff(is_word.view(np.int8), prepend=np.int8(0), append=np.int8(0))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)
    _POWERS.ensure(len(mapped) + 1)
    with np.errstate(over="ignore"):
        values = (mapped.astype(np.uint64) + np.uint64(1)) * _POWERS.pow[: len(mapped)]
        prefix = np.zeros(len(mapped) + 1, dtype=np.uint64)
        np.cumsum(values, out=prefix[1:])
        hashes = _fmix64((prefix[ends] - prefix[starts]) * _POWERS.inv[starts])
    doc_start = np.zeros(len(texts), dtype=np.int64)
    np.cumsum(lens[:-1] + 1, out=doc_start[1:])
    doc_of_word = np.searchsorted(doc_start, starts, side="right") - 1
    return hashes, np.bincount(doc_of_word, minlength=len(texts))


def _chunks(texts: Sequence[str], limit: int):
    """Consecutive slices of documents holding about ``limit`` characters each."""
    lo, size = 0, 0
    for i, t in enumerate(texts):
        size += len(t) + 1
        if size >= limit:
            yield lo, i + 1
            lo, size = i + 1, 0
    if lo < len(texts):
        yield lo, len(texts)


class MinHasher:
    """Signatures of word n-gram shingles; parameters fixed at construction."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        if not 1 <= ngram <= len(SHINGLE_MULT):
            raise ValueError(f"ngram must be between 1 and {len(SHINGLE_MULT)}, got {ngram}")
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        self.permutations = MinHash(num_perm=num_perm, seed=seed, scheme=SCHEME).permutations
        self._a = self.permutations[0].astype(np.uint32)[:, None]
        self._b = self.permutations[1].astype(np.uint32)[:, None]

    def shingle_hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """All shingle hashes of the documents (uint32) and where each document's begin."""
        n = self.ngram
        ids, lens = _word_hashes(texts)
        total = len(ids)
        starts = np.zeros(len(texts), dtype=np.int64)
        np.cumsum(lens[:-1], out=starts[1:])
        with np.errstate(over="ignore"):
            # window[i] = sum_k ids[i+k] * MULT[k] over the whole batch; windows that cross a
            # document boundary are never gathered.
            m = max(total - n + 1, 0)
            window = np.zeros(m, dtype=np.uint64)
            for k in range(n):
                window += ids[k : k + m] * SHINGLE_MULT[k]
            short = np.flatnonzero(lens < n)  # fewer than n words: one shingle of them all
            short_vals = np.zeros(len(short), dtype=np.uint64)
            for j, d in enumerate(short):
                part = ids[starts[d] : starts[d] + lens[d]]
                short_vals[j] = np.sum(part * SHINGLE_MULT[: len(part)], dtype=np.uint64)
        counts = np.where(lens >= n, lens - n + 1, 1)
        src = starts.copy()
        src[short] = m + np.arange(len(short))
        offsets = np.zeros(len(texts), dtype=np.int64)
        np.cumsum(counts[:-1], out=offsets[1:])
        gather = np.repeat(src - offsets, counts) + np.arange(int(counts.sum()))
        hashes = np.concatenate([window, short_vals])[gather]
        return (hashes >> np.uint64(32)).astype(np.uint32), offsets

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for lo, hi in _chunks(texts, _CHUNK_BYTES):
            out[lo:hi] = self._permute(*self.shingle_hashes(texts[lo:hi]))
        return out

    def _permute(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        # Laid out (permutation, shingle) so each per-document minimum scans contiguous memory:
        # about seven times faster than reducing down the columns of (shingle, permutation).
        mixed = _fmix32(hashes)
        out = np.empty((len(offsets), self.num_perm), dtype=np.uint32)
        ends = np.append(offsets[1:], len(mixed))
        doc = 0
        while doc < len(offsets):
            lo = offsets[doc]
            last = min(
                max(doc, int(np.searchsorted(ends, lo + _CHUNK_SHINGLES, side="right")) - 1), len(offsets) - 1
            )
            phv = self._a * mixed[None, lo : ends[last]]
            phv += self._b
            out[doc : last + 1] = np.minimum.reduceat(phv, offsets[doc : last + 1] - lo, axis=1).T
            doc = last + 1
        return out

    def lean(self, signature: np.ndarray) -> LeanMinHash:
        """The datasketch object for one signature (what ``MinHashLSH`` stores and queries)."""
        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=SCHEME)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of Jaccard similarity between two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)
