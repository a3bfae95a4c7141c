"""Semantic dedup's claims step: peak memory must not grow with the rest of the corpus.

Writes, in a temporary storage folder, one partition to deduplicate (``--docs`` documents) and
other partitions already deduplicated (their ``document_embeddings`` and ``semantic_deduplicated``
files), at two corpus sizes (``--small`` and ``--large`` other documents, 384-dimensional like
all-MiniLM-L6-v2, clustered with near-copies so that comparisons are realistic). Then, each in a
fresh subprocess so that peak RSS belongs to that step alone, it plans the partition:

- ``streamed``: this version (other partitions' kept embeddings streamed in ``claims_block_rows``
  blocks, compared with the members of their nearest cluster in fixed tiles);
- ``before``: the implementation this replaced (every other partition's kept embeddings loaded and
  concatenated, then one product per cluster), taken from git (``--before``, default the commit
  before the change), as the baseline of the same run.

It prints, per size and implementation, the peak RSS of the process, the RSS before the step, the
growth during the step, the seconds of the step, and the duplicates found (both must agree on the
documents compared; the rule inside the partition differs: the old one was first-come).

    .venv/bin/python -m benchmarks.bench_semantic --docs 2000 --small 20000 --large 200000
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DIM = 384


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def corpus(n: int, topics: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Documents around shared topics; a tenth are near-copies of a document of the same topic."""
    x = unit(topics[rng.integers(0, len(topics), n)] + 0.09 * rng.normal(size=(n, DIM)).astype(np.float32))
    copies = rng.random(n) < 0.1
    source = rng.integers(0, n, int(copies.sum()))
    x[copies] = unit(x[source] + 0.01 * rng.normal(size=(len(source), DIM)).astype(np.float32))
    return x


def write(storage_root: Path, name: str, vectors: np.ndarray, kept_every: int | None) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.names import DOCUMENT_EMBEDDINGS, SEMANTIC_DEDUPLICATED
    from refinery.quality.embeddings import embeddings_schema
    from refinery.storage import PROVENANCE_KEY, Storage

    storage = Storage(storage_root)
    ids = [f"{name}-{i}" for i in range(len(vectors))]
    meta = {PROVENANCE_KEY: json.dumps({"model": "bench", "dim": DIM}).encode()}
    table = pa.Table.from_arrays(
        [
            pa.array(ids),
            pa.array(["0" * 16] * len(ids)),
            pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1), pa.float32()), DIM),
        ],
        schema=embeddings_schema(DIM).with_metadata(meta),
    )
    path = storage.path(DOCUMENT_EMBEDDINGS, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, row_group_size=2000, compression="zstd")  # as write_embeddings writes
    if kept_every:
        kept = pa.table({"id": [i for j, i in enumerate(ids) if j % kept_every]})
        out = storage.path(SEMANTIC_DEDUPLICATED, name)
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(kept, out)


def build(root: Path, docs: int, others: int, partitions: int, seed: int) -> None:
    """Other partitions around shared topics (90% of each kept); the target partition's documents
    are new, except a twentieth that are near-copies of documents another partition kept."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.normal(size=(max(8, docs // 200), DIM)))
    per = others // partitions
    kept_pool = []
    for p in range(partitions):
        vectors = corpus(per, topics, rng)
        write(root, f"other{p:02d}", vectors, kept_every=10)
        kept_pool.append(vectors[np.arange(per) % 10 != 0][: max(1, docs // (20 * partitions))])
    target = corpus(docs, topics, rng)
    pool = np.concatenate(kept_pool)
    target[: len(pool)] = unit(pool + 0.01 * rng.normal(size=pool.shape).astype(np.float32))
    write(root, "target", target, None)


def child(root: str, implementation: str, before_file: str) -> None:
    """One measurement, in its own process: read the partition, then time the planning step."""
    import importlib.util

    import torch

    torch.set_num_threads(1)
    from refinery.quality.embeddings import read_embeddings
    from refinery.storage import Storage

    storage = Storage(root)
    emb = read_embeddings(storage, "target")
    if implementation == "before":
        spec = importlib.util.spec_from_file_location("semantic_before", before_file)
        module = importlib.util.module_from_spec(spec)
        sys.modules["semantic_before"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        params = module.SemanticDedupParams(docs_per_cluster=200)
    else:
        from refinery.dedup import semantic as module

        params = module.SemanticDedupParams(docs_per_cluster=200, rule="first_come")
    module.spherical_kmeans(emb.vectors[:64], 2, 1, 0)  # torch's own first-use allocations, before
    rss_before, peak_before = rss_mb(), peak_mb()
    started = time.perf_counter()
    if implementation == "before":
        claims = module.load_claims(storage, "target", emb.model, emb.dim)
    else:
        claims = module.StoredClaims(storage, "target", emb.model, emb.dim, params.claims_block_rows)
    decided = module.plan("target", emb.ids, emb.vectors, claims, params)
    seconds = time.perf_counter() - started
    across = sum(
        1 for d in decided.decisions.values() if d.duplicate and not d.neighbour.startswith("target/")
    )
    print(
        json.dumps(
            {
                "rss_before_mb": round(rss_before, 1),
                "peak_before_mb": round(peak_before, 1),
                "peak_mb": round(peak_mb(), 1),
                "seconds": round(seconds, 2),
                "duplicates": decided.duplicates,
                "duplicates_of_other_partitions": across,
                "claims": sum(claims.sources.values()),
            }
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=2000)
    parser.add_argument("--small", type=int, default=20_000)
    parser.add_argument("--large", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=10)
    parser.add_argument("--before", default="48abe86", help="git revision of the baseline implementation")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    with tempfile.TemporaryDirectory(prefix="bench-semantic-") as temp:
        before = Path(temp) / "semantic_before.py"
        before.write_text(
            subprocess.run(
                ["git", "show", f"{args.before}:refinery/dedup/semantic.py"],
                cwd=REPO,
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        )
        env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
        print(f"partition: {args.docs} documents, dim {DIM}; other partitions: {args.partitions}")
        print("| other docs | implementation | RSS before MB | peak MB | growth MB | s | dups | across |")
        print("|---|---|---|---|---|---|---|---|")
        for size in (args.small, args.large):
            root = Path(temp) / f"storage-{size}"
            build(root, args.docs, size, args.partitions, seed=1)
            for implementation in ("streamed", "before"):
                out = (
                    subprocess.run(
                        [
                            *(sys.executable, "-m", "benchmarks.bench_semantic", "--child"),
                            *(str(root), implementation, str(before)),
                        ],
                        cwd=REPO,
                        env=env,
                        check=True,
                        capture_output=True,
                        text=True,
                    )
                    .stdout.strip()
                    .splitlines()[-1]
                )
                r = json.loads(out)
                growth = r["peak_mb"] - max(r["rss_before_mb"], 0)
                print(
                    f"| {size:,} | {implementation} | {r['rss_before_mb']} | {r['peak_mb']} | {growth:.1f} | "
                    f"{r['seconds']} | {r['duplicates']} | {r['duplicates_of_other_partitions']} |"
                )


if __name__ == "__main__":
    main()
