"""byte_lookup and unit_lookup equal numpy's fancy indexing (the lookups they replace)."""

import numpy as np
import pytest

from refinery.text import lookup


def test_byte_lookup_equals_indexing_for_byte_and_bool_tables():
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, 100_003, dtype=np.uint8)
    for table in (rng.integers(0, 256, 256).astype(np.uint8), rng.random(256) < 0.3):
        got = lookup.byte_lookup(table, data)
        assert got.dtype == table.dtype and np.array_equal(got, table[data])
    assert len(lookup.byte_lookup(np.zeros(256, np.uint8), np.zeros(0, np.uint8))) == 0
    with pytest.raises(ValueError):
        lookup.byte_lookup(np.zeros(256, np.uint8), data.astype(np.uint16))


def test_unit_lookup_equals_indexing_across_slice_edges():
    rng = np.random.default_rng(8)
    table = rng.integers(0, 256, 0x10000).astype(np.uint8)
    for n in (0, 1, lookup._SLICE - 1, lookup._SLICE, 2 * lookup._SLICE + 5):
        units = rng.integers(0, 0x10000, n).astype(np.uint16)
        assert np.array_equal(lookup.unit_lookup(table, units), table[units])
