"""Ordering the mixture into what training reads: three strategies and three pacing functions.

- ``mixing`` (multi-task): every domain interleaved by weight. Each domain's n_d copies get the
  virtual times (k + u_k) / n_d (k = 0…n_d−1, u_k uniform in [0, 1)) and the manifest is sorted
  by virtual time, so every prefix of the manifest holds each domain in proportion to its share
  (stride scheduling), within one document. Inside a domain, copies go epoch by epoch, shuffled.
- ``sequential``: one domain after another (a phase each, in ``domain_order``), and with a
  replay ratio r, a share r of every phase after the first re-reads earlier phases' documents:
  r/(1−r) × n_k extra copies drawn evenly from the documents of all earlier phases, flagged
  ``replay``, shuffled into the phase. Replay adds tokens; the metadata says how many.
- ``curriculum``: easy → hard by a difficulty score (``perplexity`` from the KenLM stage where
  every document has one, else length in whitespace tokens). A pacing function g(t) gives the
  share of the difficulty-ranked pool available at training progress t ∈ [0, 1] (Platanios et
  al. 2019, "Competence-based curriculum learning"): linear g = c0 + (1 − c0) t, root
  g = sqrt(c0² + (1 − c0²) t), step: g rises in ``pacing_stages`` equal stages from c0 to 1. At
  each position one copy is drawn uniformly from the available, not yet used copies. Every copy
  is used exactly once, and the copy at position p always has difficulty rank below
  max(p + 1, g(p/N)·N): the order is monotone in difficulty within the pacing.

Every strategy is seeded and deterministic. ``step`` is position // docs_per_step; ``phase`` is
the sequential domain index, the curriculum stage (step pacing) or tenth of training, and 0 for
mixing.
"""

from __future__ import annotations

import heapq
import math
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field, model_validator


class ScheduleParams(BaseModel):
    strategy: Literal["mixing", "sequential", "curriculum"] = Field("mixing", description="How to order.")
    docs_per_step: int = Field(64, description="Documents per optimizer step (the global batch).")
    domain_order: list[str] | None = Field(None, description="Sequential: domain order (default: by name).")
    replay_ratio: float = Field(
        0.1, description="Sequential: share of each later phase re-reading earlier data."
    )
    pacing: Literal["linear", "root", "step"] = Field("root", description="Curriculum pacing function.")
    pacing_start: float = Field(
        0.2, description="Curriculum: share of the easiest data available at the start."
    )
    pacing_stages: int = Field(4, description="Step pacing: stages from pacing_start to everything.")
    difficulty: Literal["auto", "perplexity", "length"] = Field(
        "auto", description="Curriculum difficulty: perplexity where every document has it (auto), or length."
    )
    shard_docs: int = Field(50_000, description="Documents per shard file.")
    row_group_docs: int = Field(1_024, description="Documents per Parquet row group in the shards.")
    seed: int = Field(0, description="Seeds every shuffle.")

    @model_validator(mode="after")
    def _ranges(self) -> ScheduleParams:
        if self.docs_per_step < 1 or self.shard_docs < 1 or self.row_group_docs < 1:
            raise ValueError("docs_per_step, shard_docs and row_group_docs must be ≥ 1")
        if not 0 <= self.replay_ratio < 1:
            raise ValueError("replay_ratio must be in [0, 1)")
        if not 0 < self.pacing_start <= 1:
            raise ValueError("pacing_start must be in (0, 1]")
        if self.pacing_stages < 1:
            raise ValueError("pacing_stages must be ≥ 1")
        return self


def pacing(t: np.ndarray, kind: str, start: float, stages: int = 4) -> np.ndarray:
    """Share of the difficulty-ranked pool available at progress t ∈ [0, 1]."""
    t = np.clip(np.asarray(t, dtype=float), 0, 1)
    if kind == "linear":
        return start + (1 - start) * t
    if kind == "root":
        return np.sqrt(start**2 + (1 - start**2) * t)
    if kind == "step":
        stage = np.minimum(np.floor(t * stages), stages - 1)
        return start + (1 - start) * stage / max(stages - 1, 1) if stages > 1 else np.ones_like(t)
    raise ValueError(f"unknown pacing {kind!r}; choose linear, root or step")


def available_limit(n: int, kind: str, start: float, stages: int = 4) -> np.ndarray:
    """Per position p: how many of the easiest copies may have been drawn by then (≥ p + 1)."""
    p = np.arange(n)
    limit = np.ceil(pacing(p / max(n, 1), kind, start, stages) * n - 1e-9).astype(np.int64)
    return np.clip(np.maximum(limit, p + 1), 1, n)


def curriculum_order(difficulty: np.ndarray, kind: str, start: float, stages: int, seed: int) -> np.ndarray:
    """Indices into ``difficulty`` in curriculum order (see the module docstring)."""
    n = len(difficulty)
    rng = np.random.default_rng(seed)
    ranked = np.lexsort((rng.random(n), difficulty))  # easiest first, ties at random
    limit = available_limit(n, kind, start, stages)
    priority = rng.random(n)
    pool: list[tuple[float, int]] = []
    order = np.empty(n, dtype=np.int64)
    added = 0
    for p in range(n):
        while added < limit[p]:
            heapq.heappush(pool, (priority[added], added))
            added += 1
        order[p] = ranked[heapq.heappop(pool)[1]]
    return order


def mixing_order(domains: np.ndarray, epochs: np.ndarray, seed: int) -> np.ndarray:
    """Stride-scheduled interleaving of domains (see the module docstring)."""
    n = len(domains)
    rng = np.random.default_rng(seed)
    vtime = np.empty(n)
    for i, d in enumerate(sorted(set(domains.tolist()))):
        members = np.flatnonzero(domains == d)
        # epoch by epoch, shuffled inside an epoch
        members = members[np.lexsort((rng.random(len(members)), epochs[members]))]
        k = len(members)
        vtime[members] = (np.arange(k) + rng.random(k)) / k + i * 1e-12
    return np.argsort(vtime, kind="stable")


def sequential_order(
    domains: np.ndarray, epochs: np.ndarray, order: list[str], replay_ratio: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(indices with repeats for replay, phase per position, replay flag per position)."""
    rng = np.random.default_rng(seed)
    present = set(domains.tolist())
    missing = sorted(present - set(order))
    if missing:
        raise ValueError(f"domain_order lacks domains {missing} (has {order})")
    idx_parts, phase_parts, replay_parts = [], [], []
    earlier: list[np.ndarray] = []
    phase = 0
    for d in order:
        own = np.flatnonzero(domains == d)
        if not len(own):
            continue
        own = own[np.lexsort((rng.random(len(own)), epochs[own]))]
        extra = np.zeros(0, np.int64)
        if earlier and replay_ratio > 0:
            pool = np.concatenate(earlier)
            count = round(replay_ratio / (1 - replay_ratio) * len(own))
            # evenly over the pool: whole passes of a shuffled pool, then a random part
            reps = [rng.permutation(pool) for _ in range(count // len(pool))]
            extra = np.concatenate([*reps, rng.permutation(pool)[: count % len(pool)]]).astype(np.int64)
        merged = np.concatenate([own, extra])
        flags = np.concatenate([np.zeros(len(own), bool), np.ones(len(extra), bool)])
        if len(extra):
            # replay spread through the phase: random interleaving that keeps own data in order
            keys = np.concatenate([np.sort(rng.random(len(own))), rng.random(len(extra))])
            perm = np.argsort(keys, kind="stable")
            merged, flags = merged[perm], flags[perm]
        idx_parts.append(merged)
        phase_parts.append(np.full(len(merged), phase, np.int32))
        replay_parts.append(flags)
        earlier.append(own)
        phase += 1
    if not idx_parts:
        return np.zeros(0, np.int64), np.zeros(0, np.int32), np.zeros(0, bool)
    return np.concatenate(idx_parts), np.concatenate(phase_parts), np.concatenate(replay_parts)


def order_mixture(
    mixture: pd.DataFrame, params: ScheduleParams, difficulty: np.ndarray | None = None
) -> pd.DataFrame:
    """The mixture's rows in training order with ``position``, ``step``, ``phase``, ``replay``
    and ``difficulty`` (null unless curriculum)."""
    domains = mixture["domain"].to_numpy(dtype=object).astype(str)
    epochs = mixture["epoch"].to_numpy()
    n = len(mixture)
    replay = np.zeros(n, bool)
    phase = np.zeros(n, np.int32)
    if params.strategy == "mixing":
        idx = mixing_order(domains, epochs, params.seed)
    elif params.strategy == "sequential":
        order = params.domain_order or sorted(set(domains.tolist()))
        idx, phase, replay = sequential_order(domains, epochs, order, params.replay_ratio, params.seed)
    else:
        if difficulty is None:
            raise ValueError("the curriculum needs a difficulty per row")
        idx = curriculum_order(
            difficulty, params.pacing, params.pacing_start, params.pacing_stages, params.seed
        )
        t = np.arange(n) / max(n, 1)
        if params.pacing == "step":
            phase = np.minimum(np.floor(t * params.pacing_stages), params.pacing_stages - 1).astype(np.int32)
        else:
            phase = np.floor(t * 10).astype(np.int32)
    out = mixture.iloc[idx].reset_index(drop=True)
    positions = np.arange(len(out), dtype=np.int64)
    out = out.assign(
        position=positions,
        step=positions // params.docs_per_step,
        phase=phase,
        replay=replay,
        difficulty=difficulty[idx] if difficulty is not None else math.nan,
    )
    return out


def eval_order(docs: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Validation/test documents once each, in a seeded shuffle (no repeats, no pacing)."""
    rng = np.random.default_rng(seed)
    out = docs.iloc[rng.permutation(len(docs))].reset_index(drop=True)
    return out.assign(position=np.arange(len(out), dtype=np.int64), phase=np.int32(0), replay=False, epoch=0)
