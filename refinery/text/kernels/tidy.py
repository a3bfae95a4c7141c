"""Cleaning's invisible-character and whitespace passes as one compiled pass over a batch.

``clean_documents`` used four RE2 substitutions and a trim over an Arrow array (CR/LF, invisible
characters, runs of spaces, spaces around line breaks, blank-line runs), each a full pass that
writes a new array. The same result in one pass: a run of space characters and line feeds becomes
one space when it holds no line feed, else as many line feeds as it holds, at most two (what
``[spaces]+`` → " ", then `` *\\n *`` → "\\n", then ``\\n{3,}`` → "\\n\\n" leave of it); then the
characters ``str.strip`` removes are cut from both ends. The classes are tables the caller builds
from its own regexes (:mod:`refinery.clean.normalize`), so this module knows no cleaning rule.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from refinery.text.kernels.utf8 import buffers, from_buffers

INVISIBLE, SPACES, TRIM = 1, 2, 4


def tidy_batch(arr: pa.Array, table: np.ndarray, strip_invisible: bool, collapse: bool) -> pa.Array:
    """``arr`` (``large_string``, no nulls) with the passes switched on applied to every string;
    ``table``: uint8 per code point with the bits INVISIBLE, SPACES and TRIM."""
    from refinery.text.kernels.compiled import tidy

    offsets, data = buffers(arr)
    out_offsets = np.empty(len(offsets), dtype=np.int64)
    out = np.empty(max(int(offsets[-1] - offsets[0]) if len(offsets) else 0, 1), dtype=np.uint8)
    tidy(offsets, data, table, INVISIBLE, SPACES, TRIM, strip_invisible, collapse, out_offsets, out)
    return from_buffers(out_offsets, out[: out_offsets[-1]] if len(out_offsets) else out[:0])
