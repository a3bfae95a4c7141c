"""The LSH banding choice, the S-curve, and the bucket function shared by every index."""

import random

import numpy as np
import pytest

from refinery.dedup.banding import (
    band_bucket,
    band_buckets,
    candidate_probability,
    choose_banding,
    false_candidate_weight,
    s_curve_markdown,
    s_curve_table,
)
from refinery.dedup.fuzzy import FuzzyDedupParams
from refinery.dedup.minhash import MinHasher, jaccard


def test_default_banding_reaches_the_recall_target_at_the_threshold():
    bands, rows = choose_banding(128, 0.8, 0.9)
    assert (bands, rows) == (13, 8)
    assert candidate_probability(0.8, 13, 8) == pytest.approx(1 - (1 - 0.8**8) ** 13)
    assert 0.90 <= candidate_probability(0.8, 13, 8) < 0.91
    assert candidate_probability(0.9, 13, 8) > 0.999
    # What datasketch chose for the same threshold: 9 bands x 13 rows, a candidate 40% of the time.
    assert candidate_probability(0.8, 9, 13) == pytest.approx(0.399, abs=0.001)
    params = FuzzyDedupParams().index_params()
    assert (params["bands"], params["rows"], params["recall"], params["format"]) == (13, 8, 0.9, 2)


@pytest.mark.parametrize(
    ("num_perm", "threshold", "recall"), [(128, 0.8, 0.9), (64, 0.7, 0.95), (256, 0.85, 0.9)]
)
def test_choice_is_the_cheapest_feasible_banding(num_perm, threshold, recall):
    bands, rows = choose_banding(num_perm, threshold, recall)
    assert bands * rows <= num_perm and candidate_probability(threshold, bands, rows) >= recall
    best = false_candidate_weight(bands, rows, threshold)
    for r in range(1, num_perm + 1):
        for b in range(1, num_perm // r + 1):
            if candidate_probability(threshold, b, r) >= recall:
                assert false_candidate_weight(b, r, threshold) >= best - 1e-12, (b, r)


def test_infeasible_and_invalid_targets_are_refused():
    with pytest.raises(ValueError, match="no banding"):
        choose_banding(2, 0.5, 0.9)
    with pytest.raises(ValueError):
        choose_banding(128, 1.0)


def test_s_curve_is_monotone_and_its_table_and_plot_render():
    grid = np.linspace(0, 1, 101)
    p = candidate_probability(grid, 13, 8)
    assert p[0] == 0 and p[-1] == 1 and (np.diff(p) >= 0).all()
    table = dict(s_curve_table(13, 8, 0.8))
    assert table[0.8] == pytest.approx(0.908, abs=0.001) and table[0.5] < 0.06
    md = s_curve_markdown(13, 8, 0.8, 128)
    assert md.startswith("![LSH S-curve](data:image/png;base64,") and "| 0.80 | 0.908 |" in md
    assert len(md) < 60_000


def test_pairs_at_the_threshold_become_candidates_nine_times_in_ten():
    """Real MinHash signatures of word sets with Jaccard exactly 0.8 (450 words each, 400 shared)."""
    letters = random.Random(2)
    hasher = MinHasher(num_perm=128, ngram=1, seed=1)
    trials = 300
    texts = []
    for _ in range(trials):
        words = list({"".join(letters.choices("abcdefghijklmnopqrstuvwxyz", k=8)) for _ in range(520)})[:500]
        texts += [" ".join(words[:450]), " ".join(words[50:])]
    sigs = hasher.signatures(texts)
    a, b = sigs[0::2], sigs[1::2]
    assert abs(np.mean([jaccard(x, y) for x, y in zip(a, b, strict=True)]) - 0.8) < 0.01
    hits = (band_buckets(a, 13, 8) == band_buckets(b, 13, 8)).any(axis=1).sum()
    hits_datasketch = (band_buckets(a, 9, 13) == band_buckets(b, 9, 13)).any(axis=1).sum()
    assert hits / trials >= 0.85  # expected 0.908
    assert hits_datasketch / trials <= 0.5  # expected 0.40


def test_bucket_function_is_fixed():
    """Changing the bucket hash changes every stored bucket: this pins it (bump FORMAT_VERSION)."""
    sigs = np.arange(256, dtype=np.uint32).reshape(2, 128)
    buckets = band_buckets(sigs, 13, 8)
    assert buckets[:, 0].tolist() == [12492750844957812, -9145260577113488128]
    assert np.array_equal(buckets[:, 5], band_bucket(sigs, 5, 8))
    changed = sigs.copy()
    changed[0, 8 * 3 + 2] += 1  # one value of band 3
    diff = band_buckets(changed, 13, 8) != buckets
    assert diff[0].tolist() == [b == 3 for b in range(13)] and not diff[1].any()


def test_permutations_are_datasketchs_affine32_without_importing_it():
    """The signatures' permutations, drawn as datasketch draws them (so signatures stay identical)."""
    from datasketch import MinHash

    from refinery.dedup.minhash import affine32_permutations

    for num_perm, seed in ((128, 1), (64, 7), (256, 42)):
        theirs = MinHash(num_perm=num_perm, seed=seed, scheme="affine32").permutations
        assert np.array_equal(affine32_permutations(num_perm, seed), theirs)


def test_s_curve_png_is_a_valid_image_of_the_curve():
    import base64
    import io
    import zlib

    md = s_curve_markdown(9, 13, 0.8, 128)
    data = base64.b64decode(md.split("base64,", 1)[1].split(")", 1)[0])
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    stream = io.BytesIO(data[33:])
    raw = b""
    while True:  # the IDAT chunks, checked by their CRCs
        size = int.from_bytes(stream.read(4), "big")
        kind, body, crc = stream.read(4), stream.read(size), int.from_bytes(stream.read(4), "big")
        assert zlib.crc32(kind + body) == crc
        if kind == b"IEND":
            break
        raw += body if kind == b"IDAT" else b""
    pixels = np.frombuffer(zlib.decompress(raw), dtype=np.uint8).reshape(height, 1 + 3 * width)[:, 1:]
    blue = (pixels.reshape(height, width, 3) == (31, 119, 180)).all(axis=2)
    cols = np.flatnonzero(blue.any(axis=0))
    # the curve spans the plot, low on the left (J=0) and high on the right (J=1)
    assert cols.min() < 20 and cols.max() > width - 20
    assert np.flatnonzero(blue[:, cols.min()]).min() > np.flatnonzero(blue[:, cols.max()]).max()
