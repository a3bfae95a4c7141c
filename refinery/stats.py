"""What a stage learns while it streams: counts, reasons, histograms and a few sample rows.

The statistics accumulate batch by batch (memory independent of rows); the orchestration layer
turns them into metadata, and each partition's summary is saved beside its data for the corpus
report.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from refinery.batch import BatchResult
from refinery.text.span_counts import true_per_span

# Document length bins in whitespace tokens, shared by every stage and the corpus report.
LENGTH_EDGES = [10, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 50_000]


def whitespace_tokens(texts: pa.Array | pa.ChunkedArray | list[str]) -> np.ndarray:
    """Whitespace tokens per text: the project's token measure (every stage's stats, the mixture).

    Counted as ``len(pc.utf8_split_whitespace(text))`` (Arrow's whitespace is ``str.isspace``'s:
    :data:`UNICODE_SPACES`), from the UTF-8 bytes directly: a token starts at each character that
    is not whitespace and follows whitespace or the start of its text. Splitting into lists of
    strings only to count them cost most of a stage's statistics."""
    arr = texts if isinstance(texts, pa.Array | pa.ChunkedArray) else pa.array(texts, type=pa.large_string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.large_string())
    if arr.null_count or not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        split = pc.utf8_split_whitespace(arr)
        return pc.list_value_length(split).to_numpy(zero_copy_only=False).astype(np.int64)
    return _counts_in_slices(arr)


# Texts are counted in runs of about this many bytes: each pass's temporaries (a few bytes per byte
# of text) then stay in the cache and are reused by the allocator, instead of being freshly mapped
# per batch (page faults). On the 105 MB real corpus, batches of 5,000 documents: 0.51-0.56 CPU s
# whole, 0.12 in runs of 256 KB (0.17 at 128 KB, 0.20 at 512 KB and 4 MB, 0.28 at 64 KB).
_SLICE_BYTES = 1 << 18


def _counts_in_slices(arr: pa.Array) -> np.ndarray:
    """:func:`_whitespace_token_counts` over runs of whole texts of about ``_SLICE_BYTES`` (a text
    longer than that alone): a text's count depends on its own bytes only, so the counts are the
    same."""
    n = len(arr)
    dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset : arr.offset + n + 1]
    if n == 0 or offsets[-1] - offsets[0] <= _SLICE_BYTES:
        return _whitespace_token_counts(arr)
    # each run ends at the last text ending within _SLICE_BYTES of where it starts
    ends = np.searchsorted(offsets, offsets[:-1] + _SLICE_BYTES, side="right") - 1
    parts, start = [], 0
    while start < n:
        end = min(max(int(ends[start]), start + 1), n)
        parts.append(_whitespace_token_counts(arr.slice(start, end - start)))
        start = end
    return np.concatenate(parts)


# Every code point that str.isspace() and Arrow's utf8 whitespace kernels treat as whitespace
# (tests/unit/test_stats_tokens.py holds this list equal to both), as UTF-8 byte sequences.
UNICODE_SPACES = (
    *"\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680",
    *map(chr, range(0x2000, 0x200B)),
    *"\u2028\u2029\u202f\u205f\u3000",
)
if sorted(ord(c) for c in UNICODE_SPACES if ord(c) < 0x80) != [*range(9, 14), *range(28, 33)]:
    raise RuntimeError("ASCII whitespace is no longer 9-13 and 28-32: update _whitespace_token_counts")
_WIDE_SPACES = [c.encode() for c in UNICODE_SPACES if ord(c) >= 0x80]


# The multi-byte whitespace sequences as integers of their bytes (big-endian), by length.
_WIDE_2 = np.array([int.from_bytes(b, "big") for b in _WIDE_SPACES if len(b) == 2], dtype=np.uint32)
_WIDE_3 = np.array([int.from_bytes(b, "big") for b in _WIDE_SPACES if len(b) == 3], dtype=np.uint32)
if len(_WIDE_2) + len(_WIDE_3) != len(_WIDE_SPACES):
    raise RuntimeError("a whitespace character of four UTF-8 bytes: extend _mark_wide_spaces")


def _mark_wide_spaces(data: np.ndarray, leads: np.ndarray, space: np.ndarray) -> None:
    """Set ``space`` on every byte of each multi-byte whitespace character starting at one of
    ``leads`` (the positions of its possible lead bytes): the two bytes after each lead are read
    once, and each candidate compared with all sequences at once (on man pages, groff's curly
    quotes and dashes make millions of 0xE2 leads)."""
    last = len(data) - 1
    second = data[np.minimum(leads + 1, last)].astype(np.uint32)
    third = data[np.minimum(leads + 2, last)].astype(np.uint32)
    lead_second = (data[leads].astype(np.uint32) << 8) | second
    two = leads[np.isin(lead_second, _WIDE_2) & (leads + 1 <= last)]
    three = leads[np.isin((lead_second << 8) | third, _WIDE_3) & (leads + 2 <= last)]
    for hit, length in ((two, 2), (three, 3)):
        for k in range(length):
            space[hit + k] = True


def _whitespace_token_counts(arr: pa.Array) -> np.ndarray:
    n = len(arr)
    dtype = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=dtype)[arr.offset : arr.offset + n + 1].astype(np.int64)
    if not n or offsets[-1] == offsets[0]:
        return np.zeros(n, dtype=np.int64)
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    offsets = offsets - offsets[0]
    # ASCII whitespace is 9-13 and 28-32: two unsigned wrap-around compares. A table lookup
    # (``table[data]``) first casts the bytes to an ``intp`` index, eight bytes each: a
    # temporary of 8x the batch, freshly mapped on every call, whose page faults cost more
    # than the count itself (refinery/text/lookup.py says the same of the word counts).
    space = np.less(data - np.uint8(9), 5)
    space |= np.less(data - np.uint8(28), 5)
    # Multi-byte whitespace: every byte of the sequence is whitespace (lead bytes 0xC2, 0xE1-0xE3).
    leads = np.less(data - np.uint8(0xE1), 3)
    leads |= data == 0xC2
    leads = np.flatnonzero(leads)
    if len(leads):
        _mark_wide_spaces(data, leads, space)
    # A token starts at each non-space byte after a space byte or at the start of its text.
    start = ~space
    start[1:] &= space[:-1]
    first, end = offsets[:-1], offsets[1:]
    filled = end > first
    start[first[filled]] = ~space[first[filled]]
    words = true_per_span(start, offsets)
    # Arrow's split also yields an empty string for whitespace at the start, one for whitespace
    # at the end, a second one when that trailing run is two characters or more, and one for an
    # empty text (tests/unit/test_stats_tokens.py holds this to pc.utf8_split_whitespace).
    lead = np.zeros(n, dtype=bool)
    trail = np.zeros(n, dtype=bool)
    long_trail = np.zeros(n, dtype=bool)
    lead[filled] = space[first[filled]]
    last = end[filled] - 1
    trail[filled] = space[last]
    while True:  # back to the first byte of each text's last character
        inside = (data[last] & 0xC0) == 0x80
        if not inside.any():
            break
        last = last - inside
    before = last - 1
    long_trail[filled] = trail[filled] & (before >= first[filled]) & space[np.maximum(before, 0)]
    return words + lead + trail + long_trail + ~filled


@dataclass
class Histogram:
    """A fixed-bin histogram that accumulates across batches (memory independent of rows)."""

    edges: np.ndarray
    counts: np.ndarray = field(init=False)
    missing: int = 0

    def __post_init__(self) -> None:
        self.edges = np.asarray(self.edges, dtype=float)
        self.counts = np.zeros(len(self.edges) + 1, dtype=np.int64)  # under, bins…, over

    def add(self, values) -> None:
        arr = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        nan = np.isnan(arr)
        self.missing += int(nan.sum())
        idx = np.searchsorted(self.edges, arr[~nan], side="right")
        self.counts += np.bincount(idx, minlength=len(self.counts))

    def merge(self, other: Histogram) -> None:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("cannot merge histograms with different bins")
        self.counts += other.counts
        self.missing += other.missing

    def rows(self) -> list[tuple[str, int]]:
        labels = [f"< {self.edges[0]:g}"]
        labels += [f"{lo:g} – {hi:g}" for lo, hi in zip(self.edges[:-1], self.edges[1:], strict=True)]
        labels.append(f"≥ {self.edges[-1]:g}")
        return list(zip(labels, self.counts.tolist(), strict=True))


@dataclass
class StageStats:
    """Counts a stage gathers while it streams; the Dagster layer turns them into metadata."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    rows_routed: int = 0  # input rows another stage takes (refinery.kernel.processor.routed_input)
    chars_in: int = 0
    chars_out: int = 0
    tokens_out: int = 0
    reasons: Counter = field(default_factory=Counter)
    length_tokens: Histogram = field(default_factory=lambda: Histogram(LENGTH_EDGES))
    histograms: dict[str, Histogram] = field(default_factory=dict)
    sample_kept: list[dict] = field(default_factory=list)
    sample_rejected: list[dict] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    text_column: str | None = "text"  # what chars/tokens are counted on; None for rows without text

    def observe(self, frame_in: pd.DataFrame, result: BatchResult, sample_size: int = 5) -> None:
        self.rows_in += len(frame_in)
        self.rows_out += len(result.kept)
        self.rows_rejected += len(result.rejected)
        if self.text_column and len(frame_in):
            self.chars_in += int(frame_in[self.text_column].fillna("").str.len().sum())
        self.observe_output(result.kept)
        if len(result.rejected):
            self.reasons.update(result.rejected["reason"].tolist())
        for name, hist in self.histograms.items():
            if name in result.kept.columns:
                hist.add(result.kept[name])
        _fill_sample(self.sample_kept, result.kept, sample_size)
        _fill_sample(self.sample_rejected, result.rejected, sample_size)

    def observe_output(self, kept: pd.DataFrame) -> None:
        """Size of what a stage keeps: characters, whitespace tokens, and their histogram."""
        if not len(kept) or not self.text_column:
            return
        text = pa.array(kept[self.text_column].fillna(""), type=pa.large_string())
        tokens = whitespace_tokens(text)
        self.chars_out += int(pc.sum(pc.utf8_length(text)).as_py())
        self.tokens_out += int(tokens.sum())
        self.length_tokens.add(tokens)

    def observe_output_table(self, kept: pa.Table) -> None:
        """:meth:`observe_output` for kept rows already in Arrow (ingest's blocks): the same
        counts from the text column as it is, without a round trip through pandas."""
        if not kept.num_rows or not self.text_column:
            return
        text = kept.column(self.text_column)
        if text.num_chunks == 1:
            text = text.chunk(0)  # not combined: a copy of the batch's texts
        if text.null_count or not pa.types.is_large_string(text.type):
            text = pc.cast(pc.fill_null(text, ""), pa.large_string())
        tokens = whitespace_tokens(text)
        self.chars_out += int(pc.sum(pc.utf8_length(text)).as_py())
        self.tokens_out += int(tokens.sum())
        self.length_tokens.add(tokens)

    def merge(self, other: StageStats, sample_size: int = 5) -> None:
        """Fold in the statistics of a later slice of the same partition (slices merged in input
        order give exactly the statistics of one pass over the whole partition)."""
        counts = ("rows_in", "rows_out", "rows_rejected", "rows_routed", "chars_in", "chars_out")
        counts += ("tokens_out",)
        for name in counts:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.reasons.update(other.reasons)
        self.length_tokens.merge(other.length_tokens)
        for name, hist in self.histograms.items():
            if name in other.histograms:
                hist.merge(other.histograms[name])
        self.sample_kept.extend(other.sample_kept[: max(0, sample_size - len(self.sample_kept))])
        self.sample_rejected.extend(other.sample_rejected[: max(0, sample_size - len(self.sample_rejected))])

    def summary(self) -> dict:
        """JSON-ready counts for the per-partition stats file the corpus report aggregates."""
        return {
            "rows_in": self.rows_in,
            "rows_out": self.rows_out,
            "rows_rejected": self.rows_rejected,
            "rows_routed": self.rows_routed,
            "chars_in": self.chars_in,
            "chars_out": self.chars_out,
            "tokens_out": self.tokens_out,
            "reasons": dict(self.reasons),
            "length_tokens": {
                "edges": self.length_tokens.edges.tolist(),
                "counts": self.length_tokens.counts.tolist(),
            },
            **self.extra,
        }


def _fill_sample(sample: list[dict], frame: pd.DataFrame, size: int) -> None:
    if len(sample) < size and len(frame):
        sample.extend(frame.head(size - len(sample)).to_dict("records"))
