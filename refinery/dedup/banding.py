"""LSH banding: how many bands of how many rows, each document's bucket per band, and the S-curve.

A signature of ``num_perm`` values is cut into ``bands`` bands of ``rows`` values; two documents
become candidates when all rows of at least one band agree, which for Jaccard similarity ``J``
happens with probability ``P(J) = 1 - (1 - J**rows)**bands`` (the S-curve). Candidates are then
verified against the stored signature (estimated Jaccard ≥ threshold), so a false candidate costs
one comparison and nothing else, while a missed candidate is a near-duplicate that stays. The
banding is therefore chosen for recall at the threshold first: among every (bands, rows) with
``bands * rows <= num_perm`` and ``P(threshold) >= recall``, the one with the fewest expected false
candidates, measured as the area under the S-curve below the threshold (``∫_0^t P(J) dJ``, the
false-positive weight datasketch minimises); ties go to fewer bands (less to store and look up).

datasketch's own optimum for threshold 0.8 and 128 permutations (9 bands × 13 rows) weighs false
positives and false negatives equally and reaches the threshold with probability 0.40 only; the rule
here gives 13 bands × 8 rows, P(0.8) = 0.91, P(0.85) = 0.98, P(0.9) = 0.999.

A document's bucket in a band is a 64-bit hash of that band's ``rows`` values (:func:`band_buckets`):
equal bands give equal buckets, and distinct bands collide with probability 2**-64, which the
verification step would absorb anyway. Both index backends and the corpus-wide batch mode use it.
"""

from __future__ import annotations

import numpy as np

from refinery import markdown

# Fixed forever: changing them changes every bucket and invalidates stored indexes.
_BUCKET_SEED = np.uint64(0x9E3779B97F4A7C15)
_BUCKET_MULT = np.uint64(0xBF58476D1CE4E5B9)
_GRID = np.linspace(0.0, 1.0, 2001)


def candidate_probability(jaccard: np.ndarray | float, bands: int, rows: int) -> np.ndarray:
    """P(two documents at Jaccard ``jaccard`` share at least one band): the LSH S-curve."""
    j = np.asarray(jaccard, dtype=float)
    return 1.0 - (1.0 - j**rows) ** bands


def false_candidate_weight(bands: int, rows: int, threshold: float) -> float:
    """Area under the S-curve below the threshold: how often pairs that are not near-duplicates
    become candidates, integrated over similarity (what the banding choice minimises)."""
    grid = _GRID[: int(np.searchsorted(_GRID, threshold, side="right"))]
    return float(np.trapezoid(candidate_probability(grid, bands, rows), grid))


def choose_banding(num_perm: int, threshold: float, recall: float = 0.9) -> tuple[int, int]:
    """(bands, rows) with ``P(threshold) >= recall`` and the fewest expected false candidates.

    For each ``rows``, the smallest number of bands that reaches the recall is the cheapest (more
    bands only add candidates); among those, the smallest false-candidate weight wins.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    if not 0.0 < recall < 1.0:
        raise ValueError(f"recall must be in (0, 1), got {recall}")
    best: tuple[float, int, int] | None = None
    for rows in range(1, num_perm + 1):
        feasible = [
            b for b in range(1, num_perm // rows + 1) if candidate_probability(threshold, b, rows) >= recall
        ]
        if not feasible:
            continue
        bands = feasible[0]
        key = (false_candidate_weight(bands, rows, threshold), bands, rows)
        if best is None or key[:2] < best[:2]:
            best = key
    if best is None:
        raise ValueError(
            f"no banding of {num_perm} permutations reaches P(candidate) ≥ {recall} at Jaccard {threshold}: "
            "use more permutations or a lower recall target"
        )
    return best[1], best[2]


def _mix64(h: np.ndarray) -> np.ndarray:
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xFF51AFD7ED558CCD)
    h = h ^ (h >> np.uint64(33))
    h = h * np.uint64(0xC4CEB9FE1A85EC53)
    return h ^ (h >> np.uint64(33))


def band_bucket(signatures: np.ndarray, band: int, rows: int) -> np.ndarray:
    """(n,) int64: each document's bucket in one band (a 64-bit hash of the band's ``rows`` values,
    seeded by the band's number). Signed int64 so the values go into SQLite INTEGER columns unchanged."""
    sigs = np.asarray(signatures, dtype=np.uint32)
    if sigs.ndim != 2 or sigs.shape[1] < (band + 1) * rows:
        raise ValueError(f"signatures of shape {sigs.shape} have no band {band} of {rows} rows")
    h = np.full(len(sigs), _BUCKET_SEED ^ np.uint64(band), dtype=np.uint64)
    with np.errstate(over="ignore"):
        for value in sigs[:, band * rows : (band + 1) * rows].T:
            h = _mix64((h ^ value.astype(np.uint64)) * _BUCKET_MULT)
    return h.view(np.int64)


def band_buckets(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) int64: each document's bucket in each band."""
    sigs = np.asarray(signatures, dtype=np.uint32)
    out = np.empty((len(sigs), bands), dtype=np.int64)
    for band in range(bands):
        out[:, band] = band_bucket(sigs, band, rows)
    return out


def s_curve_table(bands: int, rows: int, threshold: float, points: tuple[float, ...] = ()) -> list[tuple]:
    """(J, P(candidate)) at a few similarities around the threshold."""
    grid = sorted({0.3, 0.5, 0.6, 0.7, 0.75, round(threshold, 4), 0.85, 0.9, 0.95, *points})
    return [(j, float(candidate_probability(j, bands, rows))) for j in grid]


def s_curve_markdown(bands: int, rows: int, threshold: float, num_perm: int) -> str:
    """The S-curve as a small PNG (data URI, drawn without matplotlib: :mod:`refinery.png`) and a
    table of P(candidate) at a few J, for metadata."""
    from refinery.png import line_chart_uri

    uri = line_chart_uri(_GRID, candidate_probability(_GRID, bands, rows), marker_x=threshold)
    image = f"![LSH S-curve]({uri})"
    caption = (
        f"LSH S-curve: {bands} bands × {rows} rows of {num_perm} permutations; x: Jaccard similarity "
        f"0–1, y: P(candidate) 0–1, grid every 0.2, dashed: the threshold {threshold}"
    )
    rows_md = [(f"{j:.2f}", f"{p:.3f}") for j, p in s_curve_table(bands, rows, threshold)]
    return image + "\n\n" + caption + "\n\n" + markdown.table(["Jaccard", "P(candidate)"], rows_md)
