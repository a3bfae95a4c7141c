"""Packing documents into sequences of ``seq_len + 1`` tokens, by concatenation.

The documents of a split, in schedule order, are laid end to end (each already ends in its
EOS) and the stream is cut every L = seq_len + 1 tokens: sequence k holds stream tokens
[kL, (k+1)L). Sequences do not overlap (the loader predicts token i+1 from tokens ≤ i inside a
sequence), so every token of every scheduled document is in exactly one sequence, in order. A
document that does not fit the rest of a sequence continues in the next one; the last sequence
is filled with the pad id, and the shards' index records the split's real token count, so the
pads are masked. No token is dropped, none is repeated: the price is that a document can start
mid-sequence (the loader's document mask keeps attention inside each document).

Each (sequence, document) overlap is one *piece* of the lineage table: ``offset`` and ``length``
inside the sequence, ``doc_start`` inside the document's tokens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa


@dataclass
class Packer:
    """Accumulates documents; hands out whole blocks of sequences and their lineage pieces."""

    seq_tokens: int  # L = seq_len + 1
    dtype: np.dtype
    pad_id: int
    _buffer: list[np.ndarray] = field(default_factory=list)
    _buffered: int = 0
    streamed: int = 0  # tokens received so far (the stream offset of the next document)
    emitted: int = 0  # sequences handed out so far

    def add(self, tokens: np.ndarray, doc_lengths: np.ndarray) -> dict[str, np.ndarray]:
        """Add documents (their tokens back to back); returns their pieces (numpy columns
        ``doc`` (index into this call's documents), ``sequence``, ``offset``, ``length``,
        ``doc_start``)."""
        lengths = np.asarray(doc_lengths, dtype=np.int64)
        starts = self.streamed + np.concatenate([[0], np.cumsum(lengths)[:-1]]) if len(lengths) else lengths
        ends = starts + lengths
        first = starts // self.seq_tokens
        last = (ends - 1) // self.seq_tokens
        count = np.where(lengths > 0, last - first + 1, 0)
        doc = np.repeat(np.arange(len(lengths)), count)
        k = np.arange(count.sum()) - np.repeat(np.cumsum(count) - count, count)  # piece index in its doc
        sequence = np.repeat(first, count) + k
        seq_start = sequence * self.seq_tokens
        lo = np.maximum(np.repeat(starts, count), seq_start)
        hi = np.minimum(np.repeat(ends, count), seq_start + self.seq_tokens)
        self._buffer.append(np.asarray(tokens, dtype=self.dtype))
        self._buffered += int(lengths.sum())
        self.streamed += int(lengths.sum())
        return {
            "doc": doc,
            "sequence": sequence,
            "offset": (lo - seq_start).astype(np.int32),
            "length": (hi - lo).astype(np.int32),
            "doc_start": lo - np.repeat(starts, count),
        }

    def blocks(self, sequences: int, final: bool = False) -> Iterator[np.ndarray]:
        """Whole blocks of ``sequences`` rows while the buffer holds them; with ``final``, the
        rest too, its last row padded."""
        need = sequences * self.seq_tokens
        while self._buffered >= need or (final and self._buffered):
            flat = np.concatenate(self._buffer) if len(self._buffer) > 1 else self._buffer[0]
            take = min(need, self._buffered)
            rows = -(-take // self.seq_tokens)
            block = np.full(rows * self.seq_tokens, self.pad_id, dtype=self.dtype)
            block[:take] = flat[:take]
            rest = flat[take:]
            self._buffer, self._buffered = ([rest] if len(rest) else []), len(rest)
            self.emitted += rows
            yield block.reshape(rows, self.seq_tokens)


def flatten_tokens(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(all ids back to back, length per row) of a list<int> column, without Python loops."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    lengths = column.value_lengths().fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    values = column.flatten().to_numpy(zero_copy_only=False)
    return values, lengths
