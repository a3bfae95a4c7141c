"""A batch's texts as Arrow's UTF-8 buffers, read in place, and the decoding step the kernels share."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa


def large_strings(values: pd.Series | list[str] | pa.Array) -> pa.Array | None:
    """``values`` as one Arrow ``large_string`` array without nulls, or None where Arrow cannot hold
    them (a lone surrogate, which is not UTF-8; a null; not strings): the caller takes its Python
    path then. A pandas column backed by Arrow (pandas' ``str`` dtype) is not copied."""
    try:
        arr = values if isinstance(values, pa.Array | pa.ChunkedArray) else pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError):
        return None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    if not len(arr):
        return pa.array([], pa.large_string())
    if arr.type == pa.string():
        arr = arr.cast(pa.large_string())
    if arr.type != pa.large_string() or arr.null_count:
        return None
    return arr


def buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, data) of a ``large_string`` array: row ``i`` is ``data[offsets[i]:offsets[i + 1]]``."""
    _, offsets, data = arr.buffers()
    offs = np.frombuffer(offsets, dtype=np.int64)[arr.offset : arr.offset + len(arr) + 1]
    raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, dtype=np.uint8)
    return offs, raw


def from_buffers(offsets: np.ndarray, data: np.ndarray) -> pa.Array:
    """A ``large_string`` array over ``offsets`` (int64, rows + 1) and ``data`` (UTF-8, valid)."""
    return pa.LargeStringArray.from_buffers(len(offsets) - 1, pa.py_buffer(offsets), pa.py_buffer(data))
