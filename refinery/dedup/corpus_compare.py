"""How the batch pass compares with the incremental path on the same documents.

:func:`compare` reads fuzzy_deduplicated's decisions (its ``near_duplicate`` rejected rows) for the
sources the batch pass read, and lists what each path removed and where they differ; sources the stage
has not materialized are named, not compared. :func:`replay_incremental` runs the incremental path
again over the same documents in the same order, against a temporary SQLite index, so its time and
memory can be measured beside the batch pass's (:class:`Meter`: wall seconds and the peak of
``tracemalloc``'s traced allocations per step, in this process; not RSS). Each path is traced from
zero: the replay does not count the batch pass's memory.

Batch removes a superset of what the incremental path removes when sources were materialized in
sorted order: a document the incremental path removes has a verified edge to an earlier kept document,
so its component's first document is earlier and it is not kept in batch mode either. Differences the
other way come from a different materialization order, or from buckets above
``max_bucket_all_pairs``, where batch mode pairs members with anchors and neighbours only.
"""

from __future__ import annotations

import tempfile
import time
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from refinery.dedup.corpus_dedup import CorpusDedupParams
from refinery.dedup.fuzzy import FuzzyDeduper
from refinery.ids import doc_key
from refinery.names import EXACT_DEDUPLICATED, FUZZY_DEDUPLICATED
from refinery.storage import Storage

PEAK_MEMORY_MEASURE = (
    "tracemalloc: peak of the Python and NumPy allocations traced in this process during each step, "
    "counting what earlier steps of the same path still hold (not RSS; Ray workers not included)"
)


@dataclass
class Meter:
    """Seconds and tracemalloc peak (MiB) per named step. Steps inside one :meth:`session` share a
    trace, so a step's peak includes what earlier steps of the session still hold, and the largest
    step peak is the session's; a new session starts from zero."""

    seconds: dict[str, float] = field(default_factory=dict)
    peak_mb: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def session(self) -> Iterator[None]:
        started = not tracemalloc.is_tracing()  # already tracing (a profiler): share its trace
        if started:
            tracemalloc.start()
        try:
            yield
        finally:
            if started:
                tracemalloc.stop()

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        with self.session():
            tracemalloc.reset_peak()
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[name] = round(time.perf_counter() - t0, 4)
                self.peak_mb[name] = round(tracemalloc.get_traced_memory()[1] / 2**20, 3)


def replay_incremental(
    storage: Storage, sources: list[str], params: CorpusDedupParams, meter: Meter
) -> set[str]:
    """The incremental path over the same documents in the same order, against a temporary SQLite
    index (nothing shared is touched): the keys it removes."""
    from refinery.dedup.lsh_index import SqliteFuzzyIndex

    removed: set[str] = set()
    with meter.step("incremental_replay"), tempfile.TemporaryDirectory(prefix="corpus-dedup-") as tmp:
        path = Path(tmp) / "fuzzy_lsh.sqlite"
        for source in sources:  # claiming() closes its index at the end, as a stage's run does
            index = SqliteFuzzyIndex(path, params.index_params())
            with index.claiming(source) as claims:
                deduper = FuzzyDeduper(claims)
                for frame in storage.iter_batches(
                    EXACT_DEDUPLICATED, source, params.batch_rows, ["id", "text"]
                ):
                    rejected = deduper(frame).rejected
                    removed.update(doc_key(source, str(i)) for i in rejected["id"])
    return removed


def incremental_decisions(storage: Storage, sources: list[str]) -> tuple[pd.DataFrame, list[str]]:
    """fuzzy_deduplicated's near_duplicate rows of ``sources`` (key, duplicate_of, similarity), and the
    sources it has no output for."""
    frames, missing = [], []
    for source in sources:
        if not storage.exists(FUZZY_DEDUPLICATED, source):
            missing.append(source)
            continue
        rejected = storage.read(FUZZY_DEDUPLICATED, source, rejected=True)
        if not len(rejected):
            continue
        near = rejected[rejected["reason"] == "near_duplicate"]
        frames.append(
            pd.DataFrame(
                {
                    "key": [doc_key(source, str(i)) for i in near["id"]],
                    "duplicate_of": near["duplicate_of"].astype(str).to_numpy(),
                    "similarity": near["similarity"].astype(float).to_numpy(),
                }
            )
        )
    empty = pd.DataFrame({"key": [], "duplicate_of": [], "similarity": []})
    return (pd.concat(frames, ignore_index=True) if frames else empty), missing


@dataclass
class Comparison:
    """Removed documents of both paths over the sources both have decided."""

    sources: list[str]
    missing: list[str]
    batch: set[str]
    incremental: set[str]
    only_batch: pd.DataFrame  # key, duplicate_of, similarity (batch's owner)
    only_incremental: pd.DataFrame  # key, duplicate_of, similarity (incremental's owner)
    chained: int  # only-batch documents whose similarity with the kept owner is below the threshold

    def counts(self) -> dict[str, int]:
        return {
            "removed_by_batch": len(self.batch),
            "removed_by_incremental": len(self.incremental),
            "removed_by_both": len(self.batch & self.incremental),
            "only_batch": len(self.only_batch),
            "only_batch_chained": self.chained,
            "only_incremental": len(self.only_incremental),
        }


def compare(storage: Storage, table: pd.DataFrame, sources: list[str], threshold: float) -> Comparison:
    """Batch decisions against fuzzy_deduplicated's over the sources it has materialized."""
    decisions, missing = incremental_decisions(storage, sources)
    compared = [s for s in sources if s not in missing]
    rows = table[table["source"].astype(str).isin(compared)]
    keys = [doc_key(s, i) for s, i in zip(rows["source"].astype(str), rows["id"].astype(str), strict=True)]
    rows = rows.assign(key=keys)
    removed = rows[~rows["kept"]]
    batch, incremental = set(removed["key"]), set(decisions["key"])
    only_batch = removed[~removed["key"].isin(incremental)][["key", "duplicate_of", "similarity"]]
    only_incremental = decisions[~decisions["key"].isin(batch)]
    chained = int((only_batch["similarity"] < threshold).sum())
    return Comparison(compared, missing, batch, incremental, only_batch, only_incremental, chained)
