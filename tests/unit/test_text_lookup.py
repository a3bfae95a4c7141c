"""unit_lookup equals numpy's fancy indexing (the lookup it replaces), across its slice edges."""

import numpy as np

from refinery.text import lookup


def test_unit_lookup_equals_indexing_across_slice_edges():
    rng = np.random.default_rng(8)
    table = rng.integers(0, 256, 0x10000).astype(np.uint8)
    for n in (0, 1, lookup._SLICE - 1, lookup._SLICE, 2 * lookup._SLICE + 5):
        units = rng.integers(0, 0x10000, n).astype(np.uint16)
        assert np.array_equal(lookup.unit_lookup(table, units), table[units])
