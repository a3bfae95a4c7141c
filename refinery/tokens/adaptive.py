"""Online DoReMi over packed sequences: the adaptive stream of :mod:`refinery.schedule.adaptive`,
one level down.

A packed sequence can hold pieces of several documents, so it is given one domain: the domain
that holds most of its tokens (``training_tokens`` writes it per sequence, beside the shards).
With long documents, or one domain per phase, nearly every sequence is pure; near domain
boundaries of a mixed schedule a sequence's loss is credited to its majority domain (the lineage
table says exactly how mixed each one is).

Everything else is the schedule's adaptive stream, with sequences for documents: the training
loop reports per-sequence losses and domains to an :class:`~refinery.schedule.adaptive.OnlineDoremi`
(made by :func:`online_doremi`, whose log header names these shards), step t's G sequence slots
are apportioned to domains by the weights in force (``allocate_counts``, ``interleave``), domain
d's i-th delivered sequence is its (i mod n_d)-th in training order, and slots are dealt to ranks
and workers as the static stream deals sequences. The stream is a pure function of the shards
and the weight log, so a resume from step S with the recorded log reproduces it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

from refinery.schedule.adaptive import (
    AdaptiveParams,
    OnlineDoremi,
    WeightFollower,
    allocate_counts,
    interleave,
    log_path,
)
from refinery.tokens.loader import TokenLoaderError, TokenShards, batch_arrays, read_index

DOMAINS_FILE = "sequence_domains.npy"


def _shards_folder(root: Path) -> Path:
    return root if (root / "index.json").exists() else root / "shards"


def sequence_domains(root: str | Path, split: str = "train") -> tuple[list[str], np.ndarray, dict]:
    """(domain names, each sequence's domain code, the shard index) of a split."""
    root = Path(root)
    index = read_index(root)
    if split not in index["splits"]:
        raise TokenLoaderError(f"the token shards have no split {split!r}")
    names = index["splits"][split].get("domains")
    path = _shards_folder(root) / split / DOMAINS_FILE
    if names is None or not path.exists():
        raise TokenLoaderError(
            "these token shards have no per-sequence domains: re-materialize training_tokens"
        )
    return list(names), np.load(path).astype(np.int64), index


def stream_header(index: dict, split: str) -> dict:
    """What the weight log must name: these shards (tokenizer and schedule), split, step size."""
    return {
        "schedule_id": f"tokens:{index['schedule_id']}:{index['tokenizer_digest']}:{index['seq_len']}",
        "split": split,
        "docs_per_step": int(index["sequences_per_step"]),
    }


def online_doremi(
    root: str | Path,
    split: str,
    feedback_dir: str | Path,
    params: AdaptiveParams | None = None,
    reference_loss: Mapping[str, float] | None = None,
    start_step: int = 0,
    rank: int | None = None,
) -> OnlineDoremi:
    """The training loop's weight rule for a split of the packed tokens; initial weights: the
    split's sequences per domain (or uniform, ``params.initial``)."""
    params = params or AdaptiveParams()
    names, codes, index = sequence_domains(root, split)
    if not names:
        raise TokenLoaderError(f"split {split!r} has no sequences to weight")
    counts = np.bincount(codes, minlength=len(names)).astype(float)
    initial = counts / counts.sum() if params.initial == "schedule" else np.full(len(names), 1 / len(names))
    return OnlineDoremi(
        feedback_dir, names, initial, params, reference_loss, start_step, rank, stream_header(index, split)
    )


class AdaptiveTokenReader:
    """One consumer's part of the adaptive sequence stream: batches as :class:`TokenReader`'s,
    plus ``domain`` (codes into ``domains``), ``slot`` and ``domain_epoch``."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        feedback: str | Path = "",
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
        start_step: int = 0,
        worker: int = 0,
        num_workers: int = 1,
        steps: int | None = None,
    ):
        self.domains, self.codes, self.index = sequence_domains(root, split)
        self.shards = TokenShards(root, split, self.index)
        g = self.sequences_per_step = int(self.index["sequences_per_step"])
        batch_size = batch_size or int(self.index["micro_batch_size"])
        if world_size < 1 or not 0 <= rank < world_size or g % world_size:
            raise TokenLoaderError(
                f"rank {rank} of {world_size}: world_size must divide sequences_per_step {g}"
            )
        self.per_rank = m = g // world_size
        if m % batch_size or num_workers < 1 or not 0 <= worker < num_workers or start_step < 0:
            raise TokenLoaderError(
                f"with feedback the batch size ({batch_size}) must divide the rank's sequences per step "
                f"({m}), 0 ≤ worker < num_workers and start_step ≥ 0"
            )
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.worker, self.num_workers, self.start_step = worker, num_workers, start_step
        self.steps = -(-len(self.shards) // g) if steps is None else steps
        self.log = log_path(Path(feedback), rank)
        header = WeightFollower(self.log).header
        mine = stream_header(self.index, split) | {"domains": self.domains}
        theirs = {key: header.get(key) for key in mine}
        if theirs != mine:
            raise TokenLoaderError(f"{self.log} was written for other shards: {theirs} ≠ {mine}")

    def num_batches(self) -> int:
        return max(self.steps - self.start_step, 0) * self.per_rank // self.batch_size

    def plan(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(step, domain, sequence, domain_epoch) of this rank's m slots of each step that holds
        one of this worker's batches."""
        g, m, b = self.sequences_per_step, self.per_rank, self.batch_size
        per_step = m // b
        k = len(self.domains)
        sizes = np.bincount(self.codes, minlength=k)
        by_domain = np.argsort(self.codes, kind="stable")
        first = np.cumsum(sizes) - sizes
        follower = WeightFollower(self.log)
        credits = np.zeros(k)
        cursor = np.zeros(k, np.int64)
        lo = self.rank * m
        weights_ok = sizes > 0
        for t in range(self.steps):
            weights = np.where(weights_ok, follower.weights_for(t), 0.0)
            counts = allocate_counts(credits, weights / weights.sum(), g)
            rel = (t - self.start_step) * per_step
            if t >= self.start_step and any(
                (rel + q) % self.num_workers == self.worker for q in range(per_step)
            ):
                domain, within = interleave(counts)
                dom = domain[lo : lo + m]
                k_in = cursor[dom] + within[lo : lo + m]
                n = sizes[dom]
                yield t, dom, by_domain[first[dom] + k_in % n], k_in // n
            cursor += counts

    def batches(self) -> Iterator[dict[str, np.ndarray]]:
        g, m, b = self.sequences_per_step, self.per_rank, self.batch_size
        per_step = m // b
        eos = int(self.index["eos_id"])
        for t, dom, sequences, epochs in self.plan():
            rel = (t - self.start_step) * per_step
            for q in range(per_step):
                if (rel + q) % self.num_workers != self.worker:
                    continue
                part = slice(q * b, (q + 1) * b)
                seqs = sequences[part]
                out = batch_arrays(self.shards.take(seqs), self.shards.real_lengths(seqs), eos)
                first_slot = t * g + self.rank * m + q * b
                out.update(
                    sequence=seqs,
                    step=np.full(len(seqs), t, np.int64),
                    is_pad=np.zeros(len(seqs), bool),
                    domain=dom[part],
                    slot=np.arange(first_slot, first_slot + b, dtype=np.int64),
                    domain_epoch=epochs[part],
                )
                yield out

    __iter__ = batches
