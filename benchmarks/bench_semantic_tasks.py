"""Semantic dedup's peak memory per task against corpus size: the shuffle steps against one process.

For each corpus size ``n`` it writes, in a temporary storage folder, a partition to deduplicate
(``n`` documents, 384-dimensional vectors like all-MiniLM-L6-v2, around shared topics with a tenth
near-copies) and one other partition already deduplicated (``n`` documents, nine tenths kept: the
earlier claims). Then it deduplicates the partition twice, each task in a fresh fork of this
process so that each one's peak belongs to it alone (the kernel's high-water mark, reset at the
fork, minus the RSS it started with):

- ``in-process``: today's local path (``SemanticDeduper.for_partition``: the partition's
  embeddings in one process, the claims streamed), one task, the baseline of the same run;
- ``tasks``: :mod:`refinery.dedup.semantic_tasks` (sample, assign, decide, collect), each task's
  growth; the largest of each step is reported, with the largest cluster (members and claims).

Both must remove the same documents (checked). k-means is fitted on ``--sample`` rows in both.

    .venv/bin/python -m benchmarks.bench_semantic_tasks --sizes 10000 40000 160000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DIM = 384
MB = 2**20


@dataclass
class ForkedTasks:
    """Every task in a fresh fork of this process, one after the other (each one's peak its own)."""

    name: str = "forked"

    def map(self, fn, args) -> list[dict]:
        out = []
        context = multiprocessing.get_context("fork")
        for a in args:
            with ProcessPoolExecutor(1, mp_context=context) as pool:  # a fresh fork per task
                out.append(pool.submit(fn, *a).result())
        return out


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def vectors(n: int, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    x = unit(topics[rng.integers(0, len(topics), n)] + 0.09 * rng.normal(size=(n, DIM)).astype(np.float32))
    copies = rng.random(n) < 0.1
    origin = rng.integers(0, n, int(copies.sum()))
    x[copies] = unit(x[origin] + 0.01 * rng.normal(size=(len(origin), DIM)).astype(np.float32))
    return x


def write(root: Path, source: str, x: np.ndarray, kept_every: int | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.names import DOCUMENT_EMBEDDINGS, SEMANTIC_DEDUPLICATED
    from refinery.quality.embeddings import embeddings_schema, text_hash
    from refinery.stages import text
    from refinery.storage import PROVENANCE_KEY, Storage

    storage = Storage(root)
    ids = [f"{source}-{i}" for i in range(len(x))]
    texts = [f"text {i}" for i in range(len(x))]
    up = storage.path(text.SEMANTIC_DEDUPLICATED.upstream, source)
    up.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"id": ids, "text": texts}), up, row_group_size=2000)
    meta = {PROVENANCE_KEY: json.dumps({"model": "bench", "dim": DIM}).encode()}
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array([text_hash(t) for t in texts]),
            pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), DIM),
        ],
        schema=embeddings_schema(DIM).with_metadata(meta),
    )
    path = storage.path(DOCUMENT_EMBEDDINGS, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2000, compression="zstd")  # as write_embeddings writes
    if kept_every:
        out = storage.path(SEMANTIC_DEDUPLICATED, source)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": [i for j, i in enumerate(ids) if j % kept_every]}), out)


def in_process(root: str, params) -> dict:
    """Today's local path in this (forked) process: its growth and its removals."""
    from refinery.dedup.semantic import SemanticDeduper
    from refinery.dedup.semantic_tasks import PeakMemory
    from refinery.stages import text

    peak = PeakMemory(True)
    started = time.perf_counter()
    from refinery.storage import Storage

    deduper = SemanticDeduper.for_partition(
        Storage(root), text.SEMANTIC_DEDUPLICATED.upstream, "target", params, "cpu"
    )
    removed = sorted(i for i, d in deduper.plan.decisions.items() if d.duplicate)
    return {
        **peak.result(),
        "seconds": time.perf_counter() - started,
        "removed": removed,
        "largest_cluster": max(deduper.plan.cluster_sizes),
    }


def run_size(n: int, args, temp: Path) -> list[tuple]:
    import pyarrow.parquet as pq
    import torch

    from refinery.dedup.semantic import SemanticDedupParams
    from refinery.dedup.semantic_tasks import decision_files, distributed_deduper
    from refinery.stages import text
    from refinery.storage import Storage

    torch.set_num_threads(1)
    root = temp / f"n{n}"
    rng = np.random.default_rng(1)
    topics = unit(rng.normal(size=(64, DIM)))
    other = vectors(n, topics, rng)
    target = vectors(n, topics, rng)
    target[: n // 20] = unit(other[: n // 20] + 0.01 * rng.normal(size=(n // 20, DIM)).astype(np.float32))
    write(root, "other", other, kept_every=10)
    write(root, "target", target, None)
    del other, target
    params = SemanticDedupParams(
        docs_per_cluster=args.docs_per_cluster,
        kmeans_sample_rows=args.sample,
        kmeans_iterations=args.iterations,
    )
    ForkedTasks()  # fork context set up before anything large is allocated
    base = ForkedTasks().map(in_process, [(str(root), params)])[0]
    started = time.perf_counter()
    got = distributed_deduper(
        Storage(root),
        text.SEMANTIC_DEDUPLICATED.upstream,
        "target",
        params,
        ForkedTasks(),
        workers=args.workers,
        slice_rows=args.slice_rows,
        measure=True,
    )
    seconds = time.perf_counter() - started
    removed = sorted(
        r["key"].removeprefix("target/")
        for f in decision_files(got.job)
        for r in pq.read_table(f, columns=["key", "duplicate"]).to_pylist()
        if r["duplicate"]
    )
    f = got.figures
    vector_mb = n * DIM * 4 / MB
    growth = round((base["peak_rss"] - base["start_rss"]) / MB)
    rows = [(n, "in-process (baseline)", 1, growth, base["largest_cluster"], round(base["seconds"], 1),
             len(base["removed"]))]  # fmt: skip
    for step in ("sample", "assign", "decide", "collect"):
        largest = f"{f.largest_cluster_rows} ({f.reducer_files} files merged)" if step == "decide" else ""
        rows.append(
            (
                n,
                f"tasks: {step}",
                f.tasks[step],
                round(f.growth[step] / MB),
                largest,
                round(f.seconds[step], 1),
                "",
            )
        )
    rows.append(
        (
            n,
            "tasks: all (k-means in the driver)",
            sum(f.tasks.values()),
            "",
            "",
            round(seconds, 1),
            len(removed),
        )
    )
    print(
        json.dumps(
            {
                "n": n,
                "partition_vectors_mb": round(vector_mb),
                "same_removals": removed == base["removed"],
                "removed": len(removed),
                "kmeans_s": f.seconds.get("kmeans"),
            }
        ),
        flush=True,
    )
    if removed != base["removed"]:
        raise SystemExit(
            f"n={n}: the tasks removed {len(removed)}, the in-process plan {len(base['removed'])}"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 40_000, 160_000])
    parser.add_argument("--docs-per-cluster", type=int, default=1000)
    parser.add_argument("--sample", type=int, default=20_000)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--slice-rows", type=int, default=20_000)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(f"load average before: {' '.join(load)}; cores: {os.cpu_count()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-semantic-tasks-") as temp:
        for n in args.sizes:
            rows += run_size(n, args, Path(temp))
    with open("/proc/loadavg") as fh:
        load = fh.read().split()[:3]
    print(f"load average after: {' '.join(load)}")
    print("| documents (+ as many others, 90% kept) | path / step | tasks | peak growth per task MB | "
          "largest cluster rows (in-process: members; tasks: members + claims) | s | removed |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(str(v) for v in row) + " |")


if __name__ == "__main__":
    main()
