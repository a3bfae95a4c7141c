"""true_per_span: the per-document count of set flags equals positions + searchsorted, both ways."""

import numpy as np

from refinery.text.span_counts import SHORT_SPAN, true_per_span


def test_counts_equal_the_index_path_for_long_short_and_empty_spans():
    rng = np.random.default_rng(5)
    for mean in (3, SHORT_SPAN * 4):  # the index path, then one count_nonzero per span
        lengths = rng.integers(0, 2 * mean, size=300)
        lengths[::7] = 0  # empty documents
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        for flags in (rng.random(bounds[-1]) < 0.3, rng.integers(0, 4, size=bounds[-1], dtype=np.uint8) & 2):
            expected = np.diff(np.searchsorted(np.flatnonzero(flags), bounds))
            assert true_per_span(flags, bounds).tolist() == expected.tolist()
    assert true_per_span(np.zeros(0, dtype=bool), np.array([0])).tolist() == []
