"""Streaming packed token sequences to PyTorch: exactly once, in order, across ranks and workers.

The sibling of :mod:`refinery.schedule.loader`, one level down: the items are the packed
sequences of ``training_tokens`` (its Megatron shards, memory-mapped), and a global step is
G = ``sequences_per_step`` sequences (micro_batch_size × data_parallel_size × grad_accumulation,
as materialized). The same rules hold:

- **Ranks** (R): step t's G sequences are cut into R contiguous slices of m = G / R; rank r
  reads sequences tG + rm … tG + rm + m − 1 of every step (what the lineage table's ``rank``
  says). G must be divisible by R.
- **Workers** (W per rank, micro-batch b): worker w makes the rank's batches w, w + W, …; a
  ``DataLoader(dataset, batch_size=None, num_workers=W)`` returns them round-robin, so the loop
  sees the rank's stream in order, whatever W is.
- **Resume**: ``start_step`` skips every sequence before step ``start_step``; a resumed run
  sees exactly the tail of the uninterrupted one.
- **The last step** (``last_step="pad"``, the default): when the sequence count is not a
  multiple of G, every rank still gets the same number of batches: the short step's slices are
  cut to rank 0's share, and the missing items are *pad sequences* (``is_pad``; every label
  -100, so they add nothing to the loss). ``"drop"`` leaves the short step out.

Every token of every scheduled document is in exactly one sequence (:mod:`refinery.tokens.packing`),
so the guarantee holds at the token level: the rows ``is_pad`` is false for, with their labels,
are every real token once.

Each batch (a dict of numpy arrays from :class:`TokenReader`, of tensors from
``refinery.tokens.dataset.TokenDataset``):

- ``input_ids`` (b, seq_len): tokens 0 … seq_len − 1 of each sequence;
- ``labels`` (b, seq_len): token i + 1, or -100 where it is padding or the start of another
  document (the token predicted from an EOS);
- ``document_ids`` (b, seq_len): a segment number per token inside its sequence (-1 on padding):
  attend where two tokens share one — the block-diagonal document mask;
- ``position_ids`` (b, seq_len): positions restarting at every document;
- ``sequence``, ``step`` (b,) and ``is_pad`` (b,).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.fs as pafs

from refinery.fs import exists, join, split_root
from refinery.tokens.megatron import MegatronShard

IGNORE = -100
LastStep = Literal["pad", "drop"]


class TokenLoaderError(ValueError):
    pass


def shards_folder(root: str | Path) -> tuple[pafs.FileSystem, str]:
    """(filesystem, folder holding index.json) of ``root``: storage/training_tokens or its shards
    folder, a local path or a :mod:`pyarrow.fs` URI (``s3://bucket/prefix/training_tokens?…``)."""
    filesystem, base = split_root(root)
    return filesystem, base if exists(filesystem, join(base, "index.json")) else join(base, "shards")


def read_index(root: str | Path) -> dict:
    """``training_tokens``' shard index; ``root`` is storage/training_tokens (or its shards folder)."""
    filesystem, folder = shards_folder(root)
    try:
        with filesystem.open_input_stream(join(folder, "index.json")) as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        raise TokenLoaderError(f"no token shards under {root}: materialize training_tokens first") from None


class TokenShards:
    """A split's Megatron shards as one array of sequences (``shards[i]``, ``shards.take(idx)``)."""

    def __init__(self, root: str | Path, split: str, index: dict):
        filesystem, folder = shards_folder(root)
        if split not in index["splits"]:
            raise TokenLoaderError(
                f"the token shards have no split {split!r}; they have {sorted(index['splits'])}"
            )
        entry = index["splits"][split]
        self.shards = [MegatronShard(join(folder, s["prefix"]), filesystem) for s in entry["megatron"]]
        self.firsts = np.array([s["first"] for s in entry["megatron"]], dtype=np.int64)
        self.count = int(entry["sequences"])
        self.tokens = int(entry["tokens"])  # real tokens; the rest of the last sequence is padding
        self.seq_tokens = index["seq_len"] + 1
        found = sum(len(s) for s in self.shards)
        if found != self.count:
            raise TokenLoaderError(
                f"split {split!r}: shards hold {found} sequences, the index says {self.count}"
            )

    def __len__(self) -> int:
        return self.count

    def take(self, sequences: np.ndarray) -> np.ndarray:
        """(len, seq_len + 1) int64 rows of the given sequences."""
        sequences = np.asarray(sequences, dtype=np.int64)
        out = np.empty((len(sequences), self.seq_tokens), dtype=np.int64)
        which = np.searchsorted(self.firsts, sequences, side="right") - 1
        row = 0
        while row < len(sequences):  # runs of consecutive sequences in one shard: one slice each
            k, first = int(which[row]), int(sequences[row])
            end = row + 1
            while end < len(sequences) and which[end] == k and sequences[end] == first + (end - row):
                end += 1
            shard = self.shards[k]
            local = first - int(self.firsts[k])
            start = int(shard.pointers[local]) // shard.dtype.itemsize
            flat = shard.tokens[start : start + (end - row) * self.seq_tokens]
            out[row:end] = flat.reshape(end - row, self.seq_tokens)
            row = end
        return out

    def real_lengths(self, sequences: np.ndarray) -> np.ndarray:
        """Real (not padding) tokens of each sequence."""
        return np.clip(self.tokens - sequences * self.seq_tokens, 0, self.seq_tokens)


def batch_arrays(rows: np.ndarray, real: np.ndarray, eos_id: int) -> dict[str, np.ndarray]:
    """input_ids, labels, document_ids and position_ids of packed rows (see the module docstring)."""
    n, width = rows.shape
    col = np.arange(width)
    valid = col[None, :] < real[:, None]
    is_eos = (rows == eos_id) & valid
    # a token's segment: EOS tokens before it in its row
    segment = np.concatenate([np.zeros((n, 1), np.int64), np.cumsum(is_eos, axis=1)[:, :-1]], axis=1)
    segment = np.where(valid, segment, -1)
    starts = np.where(
        np.concatenate([np.ones((n, 1), bool), segment[:, 1:] != segment[:, :-1]], axis=1), col, 0
    )
    position = col - np.maximum.accumulate(starts, axis=1)
    labels = rows[:, 1:].copy()
    same = (segment[:, 1:] == segment[:, :-1]) & valid[:, 1:]
    labels[~same] = IGNORE
    return {
        "input_ids": rows[:, :-1],
        "labels": labels,
        "document_ids": segment[:, :-1].astype(np.int32),
        "position_ids": position[:, :-1],
    }


class TokenReader:
    """One consumer's part of a split of the packed tokens (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        start_step: int = 0,
        worker: int = 0,
        num_workers: int = 1,
        last_step: LastStep = "pad",
        tokenizer_digest: str | None = None,
    ):
        self.index = read_index(root)
        if tokenizer_digest is not None and tokenizer_digest != self.index["tokenizer_digest"]:
            raise TokenLoaderError(
                f"the shards were tokenized with tokenizer {self.index['tokenizer_digest']}, not "
                f"{tokenizer_digest}: re-materialize tokenized_corpus and training_tokens, "
                "or use their tokenizer"
            )
        self.shards = TokenShards(root, split, self.index)
        g = self.sequences_per_step = int(self.index["sequences_per_step"])
        if world_size < 1 or not 0 <= rank < world_size:
            raise TokenLoaderError(f"rank {rank} is not in a world of {world_size}")
        if g % world_size:
            raise TokenLoaderError(
                f"sequences_per_step {g} is not divisible by world_size {world_size}: re-materialize "
                "training_tokens with data_parallel_size (or micro_batch_size) that make it so"
            )
        batch_size = batch_size or int(self.index["micro_batch_size"])
        if batch_size < 1 or workers_bad(worker, num_workers) or start_step < 0:
            raise TokenLoaderError("batch_size ≥ 1, 0 ≤ worker < num_workers, start_step ≥ 0")
        if last_step not in ("pad", "drop"):
            raise TokenLoaderError(f"last_step must be pad or drop, got {last_step!r}")
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.worker, self.num_workers, self.start_step = worker, num_workers, start_step
        self.last_step = last_step
        self.eos_id = int(self.index["eos_id"])

    def rank_sequences(self) -> np.ndarray:
        """This rank's sequence indices from start_step on, in order; indices ≥ N are pads."""
        n, g = len(self.shards), self.sequences_per_step
        m = g // self.world_size
        full, rest = divmod(n, g)
        steps = np.arange(self.start_step, full, dtype=np.int64)
        items = (steps[:, None] * g + self.rank * m + np.arange(m)[None, :]).reshape(-1)
        if rest and self.last_step == "pad" and self.start_step <= full:
            cut = min(rest, m) if self.world_size > 1 else rest
            items = np.concatenate([items, full * g + self.rank * m + np.arange(cut, dtype=np.int64)])
        return items

    def num_batches(self) -> int:
        return -(-len(self.rank_sequences()) // self.batch_size)

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        items = self.rank_sequences()
        n = len(self.shards)
        for j in range(self.worker, self.num_batches(), self.num_workers):
            seqs = items[j * self.batch_size : (j + 1) * self.batch_size]
            pad = seqs >= n
            real_seqs = np.where(pad, (seqs - n) % max(n, 1), seqs)  # a pad copies a real sequence
            rows = self.shards.take(real_seqs)
            real = np.where(pad, 0, self.shards.real_lengths(real_seqs))
            out = batch_arrays(rows, real, self.eos_id)
            out.update(sequence=seqs, step=seqs // self.sequences_per_step, is_pad=pad)
            yield out

    __iter__ = batches


def workers_bad(worker: int, workers: int) -> bool:
    return workers < 1 or not 0 <= worker < workers
