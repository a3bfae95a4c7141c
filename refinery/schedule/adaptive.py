"""Data selection that adapts during training: domain weights the training loop feeds back.

The static schedule fixes the mixture before training. Here the loader re-weights what it
delivers next from the model's own losses, DoReMi-style but online (Xie et al. 2023 train a
proxy offline, :mod:`refinery.mixing.doremi`; here the model being trained is the proxy):

- **Update rule** (:class:`OnlineDoremi`, in the training loop's process). The loop reports each
  example's loss and domain (:meth:`~OnlineDoremi.observe`) and ends each step
  (:meth:`~OnlineDoremi.end_step`). Every ``update_every`` steps the per-domain excess loss
  λ_d = mean over the domain's examples of max(loss − reference, 0) (reference: a per-example
  reference loss, else a per-domain constant such as a reference model's held-out loss, else 0)
  drives the multiplicative-weights step of the paper, α ← normalise(α ⊙ exp(η λ)), then
  smoothing towards uniform, (1 − c) α + c/k (``refinery.mixing.doremi.update_weights``): every
  weight stays in [c/k, 1 − c + c/k]. A domain no example of which came since the last update
  keeps its last λ (so a starved domain can win weight back). Under ``torch.distributed`` the
  per-domain sums are all-reduced first, so every rank computes the same weights.
- **Channel** (training loop → DataLoader workers, which are other processes). Each update is
  one JSON line appended to ``<feedback_dir>/weights-rank<r>.jsonl`` (its first line a header
  naming the schedule, domains, lag and update period). Workers read the file at step
  boundaries. A file rather than shared memory because it works the same under fork and spawn,
  needs nothing passed to the workers but a path, and *is* the recorded weight trajectory that
  resume and plots need.
- **Staleness, made deterministic.** The update written after step f applies from step
  f + 1 + ``lag`` exactly (before the first one: the initial weights). A worker that reaches
  a step before the update it needs has arrived waits for it (polling, up to
  ``wait_timeout_s``). So the stream does not depend on timing: weights take effect exactly
  ``lag`` + 1 steps after the losses that produced them. With lag ≥ ⌈prefetch_factor × W × b /
  m⌉ (b the batch, m = G / R the rank's documents per step) workers never wait; a smaller lag
  reacts sooner but stalls prefetching. Default 4 (two workers, two batches prefetched each,
  one batch per step).

**What is delivered** (:class:`AdaptiveReader`). The split's documents are grouped by domain,
each domain's kept in schedule order: queue q_d = its positions in increasing order, n_d of
them. Step t's G slots are apportioned to domains by the weights w(t) in force at step t, with
carried-over credit, so that after every step each domain's delivered count is within 2 of
Σ_{s≤t} G·w_d(s); the step's slots are then interleaved (a domain's c slots at even spacing).
Domain d's i-th delivered document, counting in slot order across all ranks and workers, is
q_d[i mod n_d], its pass ``domain_epoch`` = i // n_d. So, **within each domain, documents come
in schedule order without repeats until the domain is exhausted, then a new pass of it
begins**. Slot t·G + j is dealt to ranks and workers exactly as position t·G + j is in the
static stream (rank r: the step's slots rm … rm + m − 1; worker w: batches w, w + W, …), so
every slot is delivered exactly once and every rank gets m documents per step (no short step,
no pads). The stream is a pure function of the schedule and the weight log: resuming from step
S with the recorded log (:class:`OnlineDoremi` with ``start_step=S`` keeps the updates of steps
< S and restores the rule's state) reproduces the uninterrupted stream from S on. What is given
up relative to the static stream: a position may come more than once (its domain's later
passes) or not at all within the budget (a down-weighted domain).

No torch here: the reader is torch-free and ``OnlineDoremi`` uses torch only when the loop
runs under ``torch.distributed`` (already imported by then) or hands it tensors.
"""

from __future__ import annotations

import itertools
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from refinery.mixing.doremi import update_weights
from refinery.schedule.shard_reading import (
    DEFAULT_COLUMNS,
    PositionReader,
    RowGroup,
    ScheduleError,
    check_consumer,
    discover_row_groups,
    row_maker,
)

LOG_FORMAT = "refinery-domain-weights/1"


class AdaptiveParams(BaseModel):
    eta: float = Field(
        1.0, description="Step size of the multiplicative-weights update (the DoReMi paper's 1)."
    )
    smoothing: float = Field(
        0.1,
        description="Mix with uniform after each update, so every weight stays ≥ smoothing / k. The paper's "
        "1e-3 suits its offline proxy, whose weights are averaged afterwards; a sampler that follows the "
        "current weights starves domains with it (examples/adaptive_training.py: worse validation loss).",
    )
    lag: int = Field(4, description="Steps between the step whose losses made an update and its first use.")
    update_every: int = Field(1, description="Steps of losses pooled per update.")
    excess_ema: float = Field(
        0.9,
        description="Weight of a domain's previous excess loss when a new one is observed: an online batch "
        "holds few examples per domain, so the per-step excess is noisy (0: use the newest alone).",
    )
    initial: Literal["schedule", "uniform"] = Field(
        "schedule",
        description="Weights before the first update: the schedule's own domain shares, or uniform.",
    )
    wait_timeout_s: float = Field(600.0, description="How long a worker waits for an update before failing.")

    def model_post_init(self, _context) -> None:
        if self.eta < 0 or not 0 <= self.smoothing <= 1 or not 0 <= self.excess_ema < 1:
            raise ValueError("eta ≥ 0, 0 ≤ smoothing ≤ 1 and 0 ≤ excess_ema < 1")
        if self.lag < 0 or self.update_every < 1 or self.wait_timeout_s <= 0:
            raise ValueError("lag ≥ 0, update_every ≥ 1, wait_timeout_s > 0")


# -- allocation of a step's slots to domains (the same arithmetic in every process) ----------------


def allocate_counts(credits: np.ndarray, weights: np.ndarray, slots: int) -> np.ndarray:
    """Documents per domain for one step of ``slots`` documents; ``credits`` (float64, one per
    domain, starting at 0) carries what each domain is owed and is updated in place.

    counts = floor(credits + slots·w), then the shortfall (at most k) goes one each to the largest
    remainders (ties: lower index); credits keep the remainder. Only elementwise float arithmetic
    and argmax: bit-identical in every process that reads the same weights."""
    credits += slots * weights
    counts = np.maximum(np.floor(credits), 0).astype(np.int64)
    short = slots - int(counts.sum())
    while short > 0:
        i = int(np.argmax(credits - counts))
        counts[i] += 1
        short -= 1
    while short < 0:  # only through float rounding: take back from the smallest remainders
        rest = np.where(counts > 0, credits - counts, np.inf)
        i = int(np.argmin(rest))
        counts[i] -= 1
        short += 1
    credits -= counts
    return counts


def interleave(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(domain per slot, index within its domain in this step) for one step: domain d's c_d slots
    at virtual times (i + ½)/c_d, merged (ties: lower domain)."""
    k = len(counts)
    domain = np.repeat(np.arange(k), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(len(domain)) - np.repeat(starts, counts)
    vtime = (within + 0.5) / counts[domain]
    order = np.lexsort((domain, vtime))
    return domain[order], within[order]


def domain_index(groups: list[RowGroup]) -> tuple[list[str], np.ndarray]:
    """The split's domain names (sorted) and each position's domain code."""
    if not groups:
        return [], np.zeros(0, np.int64)
    files = list(dict.fromkeys(g.path for g in groups))
    # read as dictionary-encoded: one code per document, no string per document
    chunks = [
        chunk
        for f in files
        for chunk in pq.read_table(
            f, columns=["domain"], read_dictionary=["domain"], filesystem=groups[0].filesystem
        )
        .column(0)
        .chunks
    ]
    if any(c.null_count for c in chunks):
        raise ScheduleError("the schedule has documents without a domain: re-materialize training_schedule")
    names = sorted({name for c in chunks for name in c.dictionary.to_pylist()})
    code = {name: i for i, name in enumerate(names)}
    parts = [
        np.array([code[x] for x in c.dictionary.to_pylist()], np.int64)[c.indices.to_numpy()] for c in chunks
    ]
    return names, np.concatenate(parts) if parts else np.zeros(0, np.int64)


def schedule_domains(root: str | Path, split: str = "train") -> tuple[list[str], np.ndarray, str | None, int]:
    """(domains, documents per domain, schedule id, docs_per_step) of a split of the schedule."""
    groups, _, per_step, ident = discover_row_groups(root, split)
    names, codes = domain_index(groups)
    return names, np.bincount(codes, minlength=len(names)), ident, per_step


# -- the weight log: one writer (the training loop of a rank), any number of readers -------------------


def log_path(feedback_dir: str | Path, rank: int) -> Path:
    return Path(feedback_dir) / f"weights-rank{rank:05d}.jsonl"


def _read_lines(path: Path, offset: int = 0) -> tuple[list[dict], int]:
    """Complete JSON lines from ``offset`` on and the offset after the last complete one (a line
    still being written has no newline yet and is left for the next read)."""
    with open(path, "rb") as f:
        f.seek(offset)
        data = f.read()
    end = data.rfind(b"\n") + 1
    return [json.loads(line) for line in data[:end].splitlines() if line.strip()], offset + end


def _write_atomic(path: Path, lines: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    tmp.write_text("".join(json.dumps(line) + "\n" for line in lines))
    os.replace(tmp, path)


def _header_key(header: Mapping) -> dict:
    """The header fields a stream depends on (all but the timeout)."""
    return {k: v for k, v in header.items() if k != "wait_timeout_s"}


class WeightFollower:
    """A worker's view of a rank's weight log: the weights in force at each step (waiting for them)."""

    def __init__(self, path: Path, timeout: float | None = None):
        self.path = path
        if not path.exists():
            raise ScheduleError(
                f"no weight log at {path}: create the OnlineDoremi (it writes the log) before the dataset"
            )
        lines, self.offset = _read_lines(path)
        if not lines or lines[0].get("format") != LOG_FORMAT:
            raise ScheduleError(f"{path} is not a domain-weight log ({LOG_FORMAT})")
        self.header = lines[0]
        self.timeout = timeout if timeout is not None else float(self.header["wait_timeout_s"])
        self.lag, self.every = int(self.header["lag"]), int(self.header["update_every"])
        self.initial = np.array(self.header["initial"], dtype=np.float64)
        self.updates: list[np.ndarray] = []
        self._take(lines[1:])

    def _take(self, entries: list[dict]) -> None:
        for e in entries:
            expected = (len(self.updates) + 1) * self.every - 1
            if e["step"] != expected:
                raise ScheduleError(
                    f"{self.path}: an update for step {e['step']} where step {expected}'s was due: the log "
                    "is from another run or was edited"
                )
            self.updates.append(np.array(e["weights"], dtype=np.float64))

    def needed(self, step: int) -> int:
        """How many updates are in force at ``step``: those of steps f ≤ step − 1 − lag."""
        return max(step - self.lag, 0) // self.every

    def weights_for(self, step: int) -> np.ndarray:
        n = self.needed(step)
        if n == 0:
            return self.initial
        if len(self.updates) < n:
            deadline, pause = time.monotonic() + self.timeout, 0.0005
            while True:
                lines, self.offset = _read_lines(self.path, self.offset)
                self._take(lines)
                if len(self.updates) >= n:
                    break
                if time.monotonic() > deadline:
                    raise ScheduleError(
                        f"no domain-weight update for step {n * self.every - 1} in {self.path} after "
                        f"{self.timeout:.0f} s: call OnlineDoremi.end_step(step) after every step "
                        "(the loader needs it to make step "
                        f"{step}), or raise lag"
                    )
                time.sleep(pause)
                pause = min(pause * 2, 0.01)
        return self.updates[n - 1]


# -- the training loop's side -------------------------------------------------------------------------


def _to_numpy(values) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().float().cpu().numpy()
    return np.asarray(values, dtype=np.float64).reshape(-1)


class OnlineDoremi:
    """Online DoReMi domain weights for one rank, written to the log its loader follows.

    ``reference_loss``: per-domain reference losses (e.g. a reference model's held-out loss per
    domain, ``DoremiResult.reference_loss``), used when :meth:`observe` gets no per-example
    reference. ``start_step`` > 0 resumes: the log's updates from steps < start_step are kept,
    the later ones dropped, and the rule's state restored from the last kept one.
    """

    def __init__(
        self,
        feedback_dir: str | Path,
        domains: Sequence[str],
        initial: np.ndarray,
        params: AdaptiveParams | None = None,
        reference_loss: Mapping[str, float] | None = None,
        start_step: int = 0,
        rank: int | None = None,
        schedule: Mapping | None = None,
    ):
        self.params = params = params or AdaptiveParams()
        self.domains = list(domains)
        self._index = {d: i for i, d in enumerate(self.domains)}
        k = len(self.domains)
        if k < 1 or len(initial) != k:
            raise ScheduleError(f"{len(initial)} initial weights for {k} domains")
        initial = np.asarray(initial, dtype=np.float64)
        initial = initial / initial.sum()
        unknown = sorted(set(reference_loss or {}) - set(self.domains))
        if unknown:
            raise ScheduleError(f"reference_loss names domains the schedule lacks: {unknown}")
        self.reference = np.array([float((reference_loss or {}).get(d, 0.0)) for d in self.domains])
        self.rank = _default_rank() if rank is None else rank
        self.log_path = log_path(feedback_dir, self.rank)
        self.header = {
            "format": LOG_FORMAT,
            **(dict(schedule) if schedule else {}),
            "domains": self.domains,
            "initial": initial.tolist(),
            "lag": params.lag,
            "update_every": params.update_every,
            "eta": params.eta,
            "smoothing": params.smoothing,
            "excess_ema": params.excess_ema,
            "reference": self.reference.tolist(),
            "wait_timeout_s": params.wait_timeout_s,
        }
        if start_step % params.update_every:
            raise ScheduleError(
                f"resume from a multiple of update_every ({params.update_every}), not step {start_step}: "
                "the losses pooled since the last update were not recorded"
            )
        self.alpha = initial.copy()
        self.excess = np.zeros(k)
        self.seen = np.zeros(k, bool)
        self.weight_sum = np.zeros(k)
        self.trajectory: list[dict] = []
        kept: list[dict] = []
        if start_step:
            kept = self._resume(start_step)
        _write_atomic(self.log_path, [self.header, *kept])
        self._next = start_step
        self._sums, self._counts = np.zeros(k), np.zeros(k)
        self._file = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 - held for appends

    @classmethod
    def for_schedule(
        cls,
        root: str | Path,
        split: str,
        feedback_dir: str | Path,
        params: AdaptiveParams | None = None,
        reference_loss: Mapping[str, float] | None = None,
        start_step: int = 0,
        rank: int | None = None,
    ) -> OnlineDoremi:
        """Domains and initial weights from a split of the training schedule."""
        params = params or AdaptiveParams()
        names, docs, ident, per_step = schedule_domains(root, split)
        if not names:
            raise ScheduleError(f"split {split!r} has no documents to weight")
        initial = docs / docs.sum() if params.initial == "schedule" else np.full(len(names), 1 / len(names))
        schedule = {"schedule_id": ident, "split": split, "docs_per_step": per_step}
        return cls(feedback_dir, names, initial, params, reference_loss, start_step, rank, schedule)

    def _resume(self, start_step: int) -> list[dict]:
        if not self.log_path.exists():
            raise ScheduleError(f"resume from step {start_step} needs the weight log {self.log_path}")
        lines, _ = _read_lines(self.log_path)
        if not lines or _header_key(lines[0]) != _header_key(self.header):
            raise ScheduleError(
                f"{self.log_path} was written for another schedule or other parameters: resume with the "
                "same AdaptiveParams, domains and reference losses"
            )
        kept = [e for e in lines[1:] if e["step"] < start_step]
        due = start_step // self.params.update_every
        if [e["step"] for e in kept] != [(i + 1) * self.params.update_every - 1 for i in range(due)]:
            raise ScheduleError(
                f"{self.log_path} lacks updates before step {start_step}: cannot resume there"
            )
        if kept:
            last = kept[-1]
            self.alpha = np.array(last["weights"], dtype=np.float64)
            self.excess = np.array(last["excess"], dtype=np.float64)
            self.seen = np.array(last["seen"], dtype=bool)
            self.weight_sum = np.array(last["weight_sum"], dtype=np.float64)  # exact, unlike mean × n
        self.trajectory = kept
        return kept

    @property
    def weights(self) -> np.ndarray:
        """The latest weights (in force from ``lag`` + 1 steps after the update that made them)."""
        return self.alpha

    @property
    def mean_weights(self) -> np.ndarray:
        """The average of the weights over the updates so far: DoReMi's static result."""
        return self.weight_sum / len(self.trajectory) if self.trajectory else self.alpha

    def observe(self, domains: Sequence, losses, reference=None) -> None:
        """Add one batch's per-example losses (and optional per-example reference losses)."""
        loss = _to_numpy(losses)
        domains = list(domains)
        if domains and isinstance(domains[0], str):
            try:
                idx = np.array([self._index[d] for d in domains], np.int64)
            except KeyError as missing:
                raise ScheduleError(f"unknown domain {missing}; the schedule has {self.domains}") from None
        else:
            idx = np.array([self._code(d) if isinstance(d, str) else int(d) for d in domains], np.int64)
        if len(idx) != len(loss):
            raise ScheduleError(f"{len(idx)} domains for {len(loss)} losses: one per example")
        ref = self.reference[idx] if reference is None else _to_numpy(reference)
        excess = np.maximum(loss - ref, 0.0)
        np.add.at(self._sums, idx, excess)
        np.add.at(self._counts, idx, 1.0)

    def _code(self, domain) -> int:
        try:
            return self._index[str(domain)]
        except KeyError:
            raise ScheduleError(f"unknown domain {domain!r}; the schedule has {self.domains}") from None

    def end_step(self, step: int) -> np.ndarray | None:
        """Close step ``step`` (every step, in order); on an update step, update the weights, append
        them to the log and return them."""
        if step != self._next:
            raise ScheduleError(
                f"end_step({step}) where step {self._next} was due: report every step in order"
            )
        self._next += 1
        if (step + 1) % self.params.update_every:
            return None
        sums, counts = _all_reduce(self._sums, self._counts)
        observed = counts > 0
        fresh = np.divide(sums, counts, out=np.zeros_like(sums), where=observed)
        ema = self.params.excess_ema
        blend = observed & self.seen
        self.excess = np.where(
            blend, ema * self.excess + (1 - ema) * fresh, np.where(observed, fresh, self.excess)
        )
        self.seen |= observed
        self.alpha = update_weights(self.alpha, self.excess, self.params.eta, self.params.smoothing)
        self.weight_sum += self.alpha
        entry = {
            "step": step,
            "effective": step + 1 + self.params.lag,
            "weights": self.alpha.tolist(),
            "excess": self.excess.tolist(),
            "seen": self.seen.tolist(),
            "observed": counts.astype(int).tolist(),
            "mean_weights": (self.weight_sum / (len(self.trajectory) + 1)).tolist(),
            "weight_sum": self.weight_sum.tolist(),
        }
        self.trajectory.append(entry)
        self._file.write(json.dumps(entry) + "\n")
        self._file.flush()
        self._sums, self._counts = np.zeros_like(sums), np.zeros_like(counts)
        return self.alpha

    def update(self, step: int, domains: Sequence, losses, reference=None) -> np.ndarray | None:
        """:meth:`observe` then :meth:`end_step`: for a loop with one batch per step."""
        self.observe(domains, losses, reference)
        return self.end_step(step)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> OnlineDoremi:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _default_rank() -> int:
    dist = getattr(sys.modules.get("torch"), "distributed", None)
    return dist.get_rank() if dist is not None and dist.is_available() and dist.is_initialized() else 0


def _all_reduce(sums: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sum the per-domain sums and counts over ranks under torch.distributed (else as they are)."""
    torch = sys.modules.get("torch")
    dist = getattr(torch, "distributed", None)
    if dist is None or not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return sums, counts
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else "cpu"
    both = torch.tensor(np.concatenate([sums, counts]), dtype=torch.float64, device=device)
    dist.all_reduce(both)
    out = both.cpu().numpy()
    return out[: len(sums)], out[len(sums) :]


# -- the loader's side ---------------------------------------------------------------------------------


class AdaptiveReader:
    """One consumer's part of the adaptive stream (see the module docstring): ``batches()`` yields
    its batches as lists of rows, ``__iter__`` their rows. Rows have the requested ``columns``
    (``domain`` always), with ``step`` the step it is delivered in, plus ``slot`` (t·G + j, unique
    across the run) and ``domain_epoch`` (the domain's pass)."""

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        feedback: str | Path = "",
        rank: int = 0,
        world_size: int = 1,
        batch_size: int = 1,
        start_step: int = 0,
        worker: int = 0,
        num_workers: int = 1,
        columns: Sequence[str] = DEFAULT_COLUMNS,
        transform: Callable[[dict], object] | None = None,
        steps: int | None = None,
    ):
        self.root, self.split = root, split  # a local path or a pyarrow.fs URI (s3://…)
        self.groups, self.total, self.docs_per_step, self.schedule_id = discover_row_groups(self.root, split)
        g = self.docs_per_step
        check_consumer(rank, world_size, g, batch_size, worker, num_workers, start_step)
        self.per_rank = m = g // world_size
        if m % batch_size:
            raise ScheduleError(
                f"with feedback the batch size ({batch_size}) must divide the rank's documents per step "
                f"({m} = {g} / {world_size}): a batch may not straddle two steps, whose weights differ"
            )
        self.rank, self.world_size, self.batch_size = rank, world_size, batch_size
        self.worker, self.num_workers, self.start_step = worker, num_workers, start_step
        # step (the delivery step, not the shard's) and domain are always there: the loop reports them.
        self.columns = list(dict.fromkeys([*[c for c in columns if c != "is_pad"], "step", "domain"]))
        self.transform = transform
        self.steps = -(-self.total // g) if steps is None else steps
        self.domains, self._codes = domain_index(self.groups)
        self.feedback = Path(feedback)
        self.log = log_path(self.feedback, rank)
        header = WeightFollower(self.log).header
        mine = {"schedule_id": self.schedule_id, "split": split, "docs_per_step": g, "domains": self.domains}
        theirs = {key: header.get(key) for key in mine}
        if theirs != mine:
            raise ScheduleError(f"{self.log} was written for another schedule: {theirs} ≠ {mine}")

    def rank_count(self) -> int:
        return max(self.steps - self.start_step, 0) * self.per_rank

    @property
    def decoded_groups(self) -> int:
        """Row groups the last pass read from disk: each domain's front moves through the shards at
        its own pace, so a row group can be decoded once per front (the cache keeps 256 MB)."""
        rows = getattr(self, "_rows", None)
        return rows.decoded_groups if rows is not None else 0

    def num_batches(self) -> int:
        return self.rank_count() // self.batch_size

    def plan(self) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
        """(step, domain, position, domain_epoch) of this rank's m slots of every step from
        start_step on that holds one of this worker's batches (arrays of m, in slot order)."""
        g, m, b = self.docs_per_step, self.per_rank, self.batch_size
        per_step = m // b
        k = len(self.domains)
        sizes = np.bincount(self._codes, minlength=k)
        by_domain = np.argsort(self._codes, kind="stable")  # positions grouped by domain, in order
        first = np.cumsum(sizes) - sizes
        follower = WeightFollower(self.log)
        credits = np.zeros(k)
        cursor = np.zeros(k, np.int64)
        lo = self.rank * m
        for t in range(self.steps):
            counts = allocate_counts(credits, follower.weights_for(t), g)
            rel = (t - self.start_step) * per_step
            if t >= self.start_step and any(
                (rel + q) % self.num_workers == self.worker for q in range(per_step)
            ):
                domain, within = interleave(counts)
                dom, k_in = domain[lo : lo + m], cursor[domain[lo : lo + m]] + within[lo : lo + m]
                n = sizes[dom]
                yield t, dom, by_domain[first[dom] + k_in % n], k_in // n
            cursor += counts

    def batches(self) -> Iterator[list]:
        g, m, b = self.docs_per_step, self.per_rank, self.batch_size
        per_step = m // b
        stored = [c for c in self.columns if c != "step"]
        reader = self._rows = PositionReader(self.groups, stored)
        make_row = row_maker([*stored, "step", "slot", "domain_epoch"])
        for t, _, positions, epochs in self.plan():
            rel = (t - self.start_step) * per_step
            for q in range(per_step):
                if (rel + q) % self.num_workers != self.worker:
                    continue
                part = slice(q * b, (q + 1) * b)
                values = reader.take(positions[part])
                slots = range(t * g + self.rank * m + q * b, t * g + self.rank * m + (q + 1) * b)
                rows = list(map(make_row, *values, itertools.repeat(t), slots, epochs[part].tolist()))
                yield rows if self.transform is None else [self.transform(r) for r in rows]

    def __iter__(self) -> Iterator:
        for batch in self.batches():
            yield from batch
