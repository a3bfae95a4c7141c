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

import unicodedata
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import LeanMinHash

from refinery.text.words import COMBINING, DIGIT, NON_WORD, simplify

SCHEME = "affine32"
MASK64 = (1 << 64) - 1
# Fixed forever: changing any constant changes every signature and invalidates stored indexes.
POLY_BASE = 0x100000001B3  # odd, so invertible modulo 2**64
POLY_INV = pow(POLY_BASE, -1, 1 << 64)
SHINGLE_MULT = np.random.default_rng(0x5EED).integers(1, 2**63, size=32, dtype=np.uint64) * np.uint64(
    2
) + np.uint64(1)
_CHUNK_BYTES = 1 << 17  # bytes of text hashed per numpy pass
_CHUNK_SHINGLES = 8192  # shingles permuted per numpy pass: 4 MB of uint32 (measured: 8192 beats 4096 by ~8%,
# fewer reduceat calls per document; 16384 no better)


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


_DELETE, _ZERO, _SPACE = 0, 1, 2  # what the code point table says besides "keep"
_KEEP = 3
_REPLACEMENT = np.array([0, ord("0"), ord(" "), 0], dtype=np.uint32)  # by table code


class _CodePointTable:
    """What :func:`simplify` does to each code point after lowercasing and NFD, as one uint8 per
    code point (built on first use from simplify's own regexes, so the two cannot drift apart):
    delete it (combining accents), make it ``0`` (any Unicode digit), make it a space (not a
    word character, or ``_``), or keep it."""

    def __init__(self) -> None:
        self._table = np.empty(0, dtype=np.uint8)

    def get(self, highest: int) -> np.ndarray:
        """The table, covering at least code points up to ``highest`` (the Basic Multilingual Plane
        is built on first use, in milliseconds; the rest only when a text needs it)."""
        if highest >= len(self._table):
            self._table = self._build(0x10000 if highest < 0x10000 else 0x110000)
        return self._table

    @staticmethod
    def _build(size: int) -> np.ndarray:
        table = np.full(size, _KEEP, dtype=np.uint8)
        index = np.concatenate([np.arange(min(size, 0xD800)), np.arange(0xE000, size)])
        every = index.astype(np.uint32).tobytes().decode("utf-32-le")
        for pattern, code in ((NON_WORD, _SPACE), (DIGIT, _ZERO), (COMBINING, _DELETE)):
            for m in pattern.finditer(every):
                table[index[m.start() : m.end()]] = code
        table[0xD800:0xE000] = _SPACE  # lone surrogates are not word characters
        return table


_CODE_POINTS = _CodePointTable()


def simplified_buffer(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """The documents joined by spaces as one UTF-8 byte array, simplified as :func:`simplify` does
    up to spacing (which only separates words), and each document's length in it.

    ASCII documents go as they are: the byte table of :func:`_word_hashes` lowercases, zeroes
    digits and blanks the rest. The others are lowercased and NFD'd per document (C calls) and
    encoded; then only their multi-byte characters are looked at: each one's code point is read
    from its bytes (vectorized), looked up in :class:`_CodePointTable`, and the character becomes
    a space, a ``0`` or nothing where simplify's regexes would make it so. No regex runs.
    """
    encoded = [
        t.encode()
        if t.isascii()
        else unicodedata.normalize("NFD", t.lower()).encode("utf-8", "surrogatepass")
        for t in texts
    ]
    lens = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
    buf = np.frombuffer(b" ".join(encoded) + b"\0\0\0", dtype=np.uint8)  # padded for the reads below
    lead = np.flatnonzero(buf >= 0xC0)
    if not len(lead):
        return buf[:-3], lens
    b0, b1, b2, b3 = (buf[lead + k].astype(np.uint32) for k in range(4))
    width = 2 + (b0 >= 0xE0) + (b0 >= 0xF0)
    cont = lambda b: b & np.uint32(0x3F)  # noqa: E731
    cp = np.where(
        width == 2,
        (b0 & 0x1F) << 6 | cont(b1),
        np.where(
            width == 3,
            (b0 & 0x0F) << 12 | cont(b1) << 6 | cont(b2),
            (b0 & 0x07) << 18 | cont(b1) << 12 | cont(b2) << 6 | cont(b3),
        ),
    )
    code = _CODE_POINTS.get(int(cp.max()))[cp]
    change = np.flatnonzero(code != _KEEP)
    if not len(change):
        return buf[:-3], lens
    buf = buf.copy()
    drop = np.zeros(len(buf), dtype=bool)
    drop[-3:] = True
    at, w, c = lead[change], width[change], code[change]
    for k in (1, 2, 3):  # continuation bytes of changed characters go
        drop[at[w > k] + k] = True
    buf[at] = _REPLACEMENT[c]
    drop[at[c == _DELETE]] = True
    gone = np.flatnonzero(drop[:-3])
    doc_end = np.cumsum(lens + 1) - 1  # position of the space after each document
    lens = lens - np.bincount(np.searchsorted(doc_end, gone, side="left"), minlength=len(lens))[: len(lens)]
    return buf[~drop], lens


def simplified_utf8(texts: Sequence[str]) -> list[bytes]:
    """Per document, the bytes :func:`simplified_buffer` gives it (for tests and inspection)."""
    buf, lens = simplified_buffer(texts)
    data, out, pos = buf.tobytes(), [], 0
    for n in lens.tolist():
        out.append(data[pos : pos + n])
        pos += n + 1
    return out


def _word_hashes(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every word of every document, in order, and the word count per document."""
    buf, lens = simplified_buffer(texts)
    mapped = np.take(_TABLE, buf)  # np.take: a third faster than fancy indexing for a byte table
    word = np.zeros(len(mapped) + 2, dtype=bool)  # padded with a non-word byte at each end
    np.not_equal(mapped, 32, out=word[1:-1])
    starts = np.flatnonzero(word[1:] > word[:-1])
    ends = np.flatnonzero(word[:-1] > word[1:])
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


def affine32_permutations(num_perm: int, seed: int) -> np.ndarray:
    """(2, num_perm) uint32: the ``a`` (odd) and ``b`` of datasketch's ``affine32`` permutations for
    ``seed``, drawn exactly as ``MinHash(num_perm, seed, scheme="affine32").permutations`` draws
    them (a test holds the two equal), without importing datasketch: it pulls in scipy, half a
    second of CPU in every process that computes signatures."""
    gen = np.random.RandomState(seed)
    a = gen.randint(0, 1 << 31, num_perm, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    b = gen.randint(0, 1 << 32, num_perm, dtype=np.uint32)
    return np.array([a, b])


class MinHasher:
    """Signatures of word n-gram shingles; parameters fixed at construction."""

    def __init__(self, num_perm: int = 128, ngram: int = 5, seed: int = 1):
        if not 1 <= ngram <= len(SHINGLE_MULT):
            raise ValueError(f"ngram must be between 1 and {len(SHINGLE_MULT)}, got {ngram}")
        self.num_perm, self.ngram, self.seed = num_perm, ngram, seed
        self.permutations = affine32_permutations(num_perm, seed)
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
            window = np.multiply(ids[:m], SHINGLE_MULT[0])
            term = np.empty_like(window)  # one buffer for every term: no temporaries per k
            for k in range(1, n):
                np.add(window, np.multiply(ids[k : k + m], SHINGLE_MULT[k], out=term), out=window)
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
        top = (np.concatenate([window, short_vals]) >> np.uint64(32)).astype(np.uint32)
        return top[gather], offsets  # the high 32 bits, taken before the gather (half the bytes)

    def signatures(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), num_perm) uint32 signatures."""
        out = np.empty((len(texts), self.num_perm), dtype=np.uint32)
        for lo, hi in _chunks(texts, _CHUNK_BYTES):
            out[lo:hi] = self._permute(*self.shingle_hashes(texts[lo:hi]))
        return out

    def _permute(self, hashes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        """Per-document minima of the permuted shingle hashes, in blocks of a fixed number of
        shingles whatever the documents' lengths (a long document would otherwise make one block
        of megabytes that leaves the cache); a document that spans blocks takes the minimum of its
        parts. Laid out (permutation, shingle) so each minimum scans contiguous memory."""
        mixed = _fmix32(hashes)
        total = len(mixed)
        out = np.full((len(offsets), self.num_perm), np.iinfo(np.uint32).max, dtype=np.uint32)
        ends = np.append(offsets[1:], total)
        block = np.empty((self.num_perm, min(_CHUNK_SHINGLES, max(total, 1))), dtype=np.uint32)
        for lo in range(0, total, _CHUNK_SHINGLES):
            hi = min(lo + _CHUNK_SHINGLES, total)
            first = int(np.searchsorted(ends, lo, side="right"))  # documents ending after lo
            stop = int(np.searchsorted(offsets, hi, side="left"))  # … and starting before hi
            phv = block[:, : hi - lo]
            np.multiply(self._a, mixed[None, lo:hi], out=phv)
            phv += self._b
            starts = np.maximum(offsets[first:stop], lo) - lo
            part = np.minimum.reduceat(phv, starts, axis=1).T
            np.minimum(out[first:stop], part, out=out[first:stop])
        return out

    def lean(self, signature: np.ndarray) -> LeanMinHash:
        """The datasketch object for one signature (what ``MinHashLSH`` stores and queries)."""
        from datasketch import LeanMinHash

        return LeanMinHash(seed=self.seed, hashvalues=signature, scheme=SCHEME)


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """MinHash estimate of Jaccard similarity between two signatures."""
    return float(np.count_nonzero(a == b)) / len(a)
