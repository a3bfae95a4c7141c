"""Megatron-LM's indexed dataset (``.bin`` + ``.idx``), written and read from its documented layout.

``.bin`` is the token ids back to back in one dtype. ``.idx`` is (little-endian):

    b"MMIDIDX\\x00\\x00"   9 bytes, the magic
    <Q version = 1
    <B dtype code         1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64, 7 float32, 8 uint16
    <Q sequence count S
    <Q document count D   (document boundaries + 1: a leading 0)
    int32[S]  sequence lengths (tokens)
    int64[S]  sequence pointers (byte offsets into .bin)
    int64[D]  document indices (sequence index where each document ends; first is 0)

This is what megatron-core's ``IndexedDataset`` (``megatron/core/datasets/indexed_dataset.py``)
reads. Here every packed sequence is one sequence *and* one document of the file, so
``IndexedDataset(prefix)[i]`` is packed sequence i of the shard, in training order; Megatron's
own ``GPTDataset`` would re-sample documents, which is why the loader (:mod:`refinery.tokens.loader`)
reads the shards by index instead. The writer needs no Megatron install.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

MAGIC = b"MMIDIDX\x00\x00"
DTYPE_CODES = {
    "uint8": 1,
    "int8": 2,
    "int16": 3,
    "int32": 4,
    "int64": 5,
    "float64": 6,
    "float32": 7,
    "uint16": 8,
}
CODE_DTYPES = {v: k for k, v in DTYPE_CODES.items()}
HEADER_BYTES = len(MAGIC) + 8 + 1 + 8 + 8


def write_shard(prefix: Path, sequences: np.ndarray, lengths: np.ndarray | None = None) -> None:
    """``prefix.bin`` and ``prefix.idx`` for a 2-D array of equal-length sequences (or a flat
    array cut by ``lengths``). Written under temporary names, then renamed (idx last)."""
    flat = np.ascontiguousarray(sequences).reshape(-1)
    if lengths is None:
        lengths = np.full(sequences.shape[0], sequences.shape[1], dtype=np.int64)
    lengths = np.asarray(lengths, dtype=np.int64)
    if lengths.sum() != flat.size:
        raise ValueError(f"lengths sum to {lengths.sum()}, the data holds {flat.size} tokens")
    dtype = flat.dtype.name
    if dtype not in DTYPE_CODES:
        raise ValueError(f"Megatron's indexed format has no dtype {dtype}")
    pointers = np.zeros(len(lengths), dtype=np.int64)
    np.cumsum(lengths[:-1] * flat.itemsize, out=pointers[1:])
    documents = np.arange(len(lengths) + 1, dtype=np.int64)  # one document per sequence
    bin_path, idx_path = prefix.with_suffix(".bin"), prefix.with_suffix(".idx")
    tmp_bin, tmp_idx = (
        bin_path.with_name("." + bin_path.name + ".tmp"),
        idx_path.with_name("." + idx_path.name + ".tmp"),
    )
    with open(tmp_bin, "wb") as f:
        f.write(flat.tobytes())
    with open(tmp_idx, "wb") as f:
        f.write(MAGIC)
        f.write(struct.pack("<Q", 1))
        f.write(struct.pack("<B", DTYPE_CODES[dtype]))
        f.write(struct.pack("<Q", len(lengths)))
        f.write(struct.pack("<Q", len(documents)))
        f.write(lengths.astype(np.int32).tobytes())
        f.write(pointers.tobytes())
        f.write(documents.tobytes())
    tmp_bin.replace(bin_path)
    tmp_idx.replace(idx_path)


class RangeTokens:
    """The tokens of a ``.bin`` on a :mod:`pyarrow.fs` filesystem (an object store), read by byte range
    on slicing: what :class:`MegatronShard` holds where a file cannot be memory-mapped."""

    def __init__(self, handle, dtype: np.dtype, size: int):
        self.handle, self.dtype = handle, dtype
        self.count = size // dtype.itemsize

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice):
            raise TypeError("token ranges are read by slice")
        start, stop, step = key.indices(self.count)
        if step != 1:
            raise ValueError("token ranges are contiguous")
        if stop <= start:
            return np.zeros(0, self.dtype)
        size = self.dtype.itemsize
        return np.frombuffer(self.handle.read_at((stop - start) * size, start * size), self.dtype)


class MegatronShard:
    """One ``.bin``/``.idx`` pair: ``shard[i]`` is sequence i. Memory-mapped when local; on another
    :mod:`pyarrow.fs` filesystem (``filesystem``, ``prefix`` a path on it) the index is read whole
    and the tokens by byte range (:class:`RangeTokens`)."""

    def __init__(self, prefix: str | Path, filesystem=None):
        remote = filesystem is not None and filesystem.type_name != "local"
        if remote:
            with filesystem.open_input_stream(f"{prefix}.idx") as handle:
                idx = handle.read()
        else:
            prefix = Path(prefix)
            idx = prefix.with_suffix(".idx").read_bytes()
        if idx[: len(MAGIC)] != MAGIC:
            raise ValueError(f"{prefix}.idx is not a Megatron index (bad magic)")
        version, code, count, docs = struct.unpack_from("<QBQQ", idx, len(MAGIC))
        if version != 1 or code not in CODE_DTYPES:
            raise ValueError(f"{prefix}.idx: version {version}, dtype code {code} not understood")
        self.dtype = np.dtype(CODE_DTYPES[code])
        offset = HEADER_BYTES
        self.lengths = np.frombuffer(idx, np.int32, count, offset)
        offset += 4 * count
        self.pointers = np.frombuffer(idx, np.int64, count, offset)
        offset += 8 * count
        self.documents = np.frombuffer(idx, np.int64, docs, offset)
        if remote:
            handle = filesystem.open_input_file(f"{prefix}.bin")
            self.tokens = RangeTokens(handle, self.dtype, handle.size())
            return
        bin_path = prefix.with_suffix(".bin")
        size = bin_path.stat().st_size
        self.tokens = np.memmap(bin_path, dtype=self.dtype, mode="r") if size else np.zeros(0, self.dtype)

    def __len__(self) -> int:
        return len(self.lengths)

    def __getitem__(self, i: int) -> np.ndarray:
        start = self.pointers[i] // self.dtype.itemsize
        return self.tokens[start : start + self.lengths[i]]
