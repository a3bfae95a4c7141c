"""Batched MinHash: equal to datasketch bit for bit, and a sound Jaccard estimator."""

import random

import numpy as np
import pytest
from datasketch import MinHash, MinHashLSH

from refinery.dedup.minhash import MinHasher, jaccard, shingle_hash, shingles
from refinery.sample import prose
from refinery.text.words import simplify

rng = random.Random(4)
DOCS = [prose.article(rng) for _ in range(40)] + [
    "",
    "!!!",
    "two words",
    "exactly five words are here",
    "Ünïcödé Straße ½ — ‘quotes’ 日本語 テキスト",
    "tabs\tand\nnewlines  and   SPACES",
    "digits 2024 and 3.14 and 1,000,000",
    "under_score snake_case_word",
    prose.foreign_article(rng, "de"),
    "x" * 5000,
]


@pytest.mark.parametrize("ngram", [1, 3, 5])
def test_signatures_equal_datasketch(ngram):
    hasher = MinHasher(num_perm=64, ngram=ngram, seed=3)
    sigs = hasher.signatures(DOCS)
    for text, sig in zip(DOCS, sigs, strict=True):
        ref = MinHash(num_perm=64, seed=3, hashfunc=shingle_hash)
        ref.update_batch(shingles(text, ngram))
        assert np.array_equal(ref.hashvalues, sig), text[:60]


def test_byte_table_matches_simplify_on_ascii():
    hasher = MinHasher(num_perm=16, ngram=1)
    for text in DOCS:
        words = simplify(text).split()
        expected = MinHash(num_perm=16, seed=1, hashfunc=shingle_hash)
        expected.update_batch([(w,) for w in words] or [()])
        assert np.array_equal(hasher.signatures([text])[0], expected.hashvalues)


def test_batches_and_chunking_do_not_change_results():
    hasher = MinHasher()
    whole = hasher.signatures(DOCS)
    one_by_one = np.vstack([hasher.signatures([d]) for d in DOCS])
    assert np.array_equal(whole, one_by_one)


def test_jaccard_estimate_tracks_true_similarity():
    hasher = MinHasher(num_perm=256, ngram=1)
    letters = random.Random(8)
    vocab = sorted({"".join(letters.choices("abcdefghij", k=6)) for _ in range(1200)})  # set order varies
    base, fresh = vocab[:400], vocab[400:800]  # alphabetic: simplify() maps every digit to 0
    for overlap in (0.2, 0.5, 0.8, 0.95):
        keep = int(len(base) * overlap)
        other = base[:keep] + fresh[: len(base) - keep]
        truth = keep / (2 * len(base) - keep)
        a, b = hasher.signatures([" ".join(base), " ".join(other)])
        assert abs(jaccard(a, b) - truth) < 0.08


def test_signatures_work_in_datasketch_lsh():
    hasher = MinHasher()
    original = prose.article(random.Random(9), paragraphs=6)
    copy = prose.near_duplicate(original, random.Random(1), edits=2)
    unrelated = prose.article(random.Random(10), paragraphs=6)
    sigs = hasher.signatures([original, copy, unrelated])
    lsh = MinHashLSH(threshold=0.8, num_perm=128)
    lsh.insert("original", hasher.lean(sigs[0]))
    assert lsh.query(hasher.lean(sigs[1])) == ["original"]
    assert lsh.query(hasher.lean(sigs[2])) == []


def test_bad_ngram_rejected():
    with pytest.raises(ValueError):
        MinHasher(ngram=0)
