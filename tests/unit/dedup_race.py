"""Partitions that share exact copies and one-word edits, claimed by concurrent processes.

Used by test_dedup_concurrency.py. It depends only on the sample generator, pandas and the
process machinery, so the same scenario can be replayed against another implementation of the
indexes (the report of the change that made claims atomic did that against the old one).
"""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import pandas as pd

from refinery.sample import prose

PARTITIONS = 4
BATCH = 3  # small batches: many claims, each racing the other partitions' claims


def build_partitions(k: int = PARTITIONS, per_kind: int = 9, seed: int = 5) -> dict[str, pd.DataFrame]:
    """``k`` partitions whose rows line up: row i of every partition is, in turn, a copy of the same
    shared article (identical in all, or a case/spacing variant), a one-word edit of the same base
    article (a different edit per partition), or an article of its own. The shared rows sit at the
    same positions, so the partitions' claims on them reach the index at about the same time."""
    rng = random.Random(seed)
    shared = [prose.article(rng, paragraphs=4) for _ in range(per_kind)]
    bases = [prose.article(rng, paragraphs=4) for _ in range(per_kind)]
    out = {}
    for p in range(k):
        prng = random.Random(f"{seed}/{p}")
        ids, texts = [], []
        for i in range(per_kind):
            copy = shared[i] if (p + i) % 3 else prose.surface_variant(shared[i])
            texts += [copy, prose.near_duplicate(bases[i], prng, edits=1), prose.article(prng, paragraphs=4)]
            ids += [f"copy{i}", f"edit{i}", f"own{i}"]
        out[f"part{p}"] = pd.DataFrame({"id": ids, "text": texts})
    return out


FILLERS = ("really", "quite", "also", "indeed", "simply")


def one_word_edit(text: str, rng: random.Random) -> str:
    """One word replaced inside a line, never a line's last word: the pipeline's C4 rule drops a
    line that no longer ends in terminal punctuation, which would turn the probe's single edit into
    a lost paragraph (a different document, not a near-duplicate)."""
    lines = text.split("\n")
    candidates = [n for n, line in enumerate(lines) if len(line.split(" ")) >= 3]
    n = rng.choice(candidates)
    words = lines[n].split(" ")
    i = rng.randrange(len(words) - 1)
    words[i] = rng.choice([f for f in FILLERS if f != words[i]])
    lines[n] = " ".join(words)
    return "\n".join(lines)


def one_word_edits(frame: pd.DataFrame, seed: int = 99) -> pd.DataFrame:
    rng = random.Random(seed)
    return pd.DataFrame(
        {
            "id": [f"probe-{s}-{i}" for s, i in zip(frame["source"], frame["id"], strict=True)],
            "text": [one_word_edit(t, rng) for t in frame["text"]],
        }
    )


def run_concurrently(worker, jobs: list[tuple], timeout: float = 240.0) -> None:
    """Start one 'spawn' process per job behind a barrier (so they claim at the same time), wait for
    all, and fail if any failed. ``worker(barrier, *job)`` must be importable."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(len(jobs))
    procs = [ctx.Process(target=worker, args=(barrier, *job)) for job in jobs]
    for proc in procs:
        proc.start()
    deadline = time.monotonic() + timeout
    for proc in procs:
        proc.join(max(0.0, deadline - time.monotonic()))
    alive = [p for p in procs if p.is_alive()]
    for proc in alive:
        proc.kill()
        proc.join()
    failed = [p.exitcode for p in procs if p.exitcode != 0]
    if alive or failed:
        raise RuntimeError(f"{len(alive)} claimants timed out, exit codes of failures: {failed}")


def write_result(out: Path, stage: str, kept: list[pd.DataFrame], rejected: list[pd.DataFrame], span) -> None:
    pd.concat(kept).to_parquet(out / f"{stage}-kept.parquet")
    pd.concat(rejected).to_parquet(out / f"{stage}-rejected.parquet")
    pd.DataFrame({"start": [span[0]], "end": [span[1]]}).to_parquet(out / f"{stage}-span.parquet")


def read_results(root: Path, stage: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Every partition's kept and rejected rows (with a ``source`` column) and claim time spans."""
    parts = sorted(p for p in root.iterdir() if p.is_dir())

    def load(kind: str) -> pd.DataFrame:
        return pd.concat(
            [pd.read_parquet(p / f"{stage}-{kind}.parquet").assign(source=p.name) for p in parts],
            ignore_index=True,
        )

    return load("kept"), load("rejected"), load("span")


def overlapping(spans: pd.DataFrame) -> bool:
    """Whether every partition was claiming while every other was (the race was real)."""
    return bool(spans["start"].max() < spans["end"].min())
