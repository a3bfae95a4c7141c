"""Per-document counts of flagged positions in a batch's flat flag array.

The batch paths (stage statistics' whitespace tokens, the heuristics' word counts) flag every byte
or character of a whole batch at once and then need, per document, how many of its flags are set.
``np.flatnonzero`` + ``searchsorted`` builds an eight-byte index per set flag (tens of MB over a
batch of long documents, freshly mapped on each call); one ``count_nonzero`` per document reads
the flags in place and is faster wherever documents are long. Where most are short, a Python call
per document would cost more, and the index path is kept.
"""

from __future__ import annotations

import numpy as np

SHORT_SPAN = 256  # mean units per document below which the index path is used


def true_per_span(flags: np.ndarray, bounds: np.ndarray) -> np.ndarray:
    """How many of ``flags[bounds[i]:bounds[i + 1]]`` are True (non-zero), for each ``i``
    (``bounds`` ascending, from 0 to at most ``len(flags)``)."""
    n = len(bounds) - 1
    if n <= 0:
        return np.zeros(max(n, 0), dtype=np.int64)
    if n > len(flags) // SHORT_SPAN:
        return np.diff(np.searchsorted(np.flatnonzero(flags), bounds))
    out = np.empty(n, dtype=np.int64)
    count = np.count_nonzero
    edges = bounds.tolist()
    for i in range(n):
        out[i] = count(flags[edges[i] : edges[i + 1]])
    return out
