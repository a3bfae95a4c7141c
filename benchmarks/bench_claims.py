"""Dedup claims per second against an index that already holds N documents, per backend.

Backends: ``local`` (SQLite), ``redis`` (one server, every key of an index under one hash tag:
one slot, one core) and ``redis-cluster`` on 1 and 3 shards (loopback Redis Cluster nodes, no
persistence, started here). For each kind (exact, fuzzy) and index size N:

1. the index is filled to N documents in its own layout, in bulk (pipelined writes or one SQLite
   transaction; random 16-byte hashes or random 128-value signatures): the fill is not timed;
2. ``--workers`` spawn processes, each a partition of its own, claim fresh documents through the
   real claim path (``ExactIndex.claim`` / ``FuzzyIndex.claim``, batches of ``--batch`` documents)
   for ``--seconds``; a third of the fuzzy documents are near-duplicates (one changed band's worth
   of values) of indexed ones, so claims find, verify and drop candidates too;
3. reported: claims per second (all workers), microseconds per claim per worker, and the index's
   bytes per document (Redis ``used_memory`` over every node, or the SQLite file with its WAL).

Run under the heavy-work lock; the machine has 2 cores shared with other jobs, so the Redis nodes,
the workers and the driver compete for the same two cores and shard scaling is bounded by that:
``flock /tmp/refinery-heavy.lock python -m benchmarks.bench_claims --sizes 1000000``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.harness import SINGLE_THREAD_ENV
from refinery.dedup.backends import open_exact_index, open_fuzzy_index
from refinery.dedup.fuzzy import FuzzyDedupParams
from refinery.dedup.sqlite_store import immediate
from refinery.ids import doc_key
from refinery.paths import Layout

PARAMS = FuzzyDedupParams().index_params()
NS = "bench"
FILL_CHUNK = 20_000


def _signatures(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2**32, size=(n, PARAMS["num_perm"]), dtype=np.uint64).astype("<u4")


# -- bulk fills, one per layout ------------------------------------------------------------------
def fill(backend: str, kind: str, n: int, layout: Layout, url: str) -> np.ndarray | None:
    """Fill the index with n documents of source 'fill'; returns the fuzzy signatures' sample."""
    rng = np.random.default_rng(0)
    sample = None
    if kind == "fuzzy":
        index = open_fuzzy_index(backend, layout, url, NS, PARAMS)
    else:
        index = open_exact_index(backend, layout, url, NS)
    for lo in range(0, n, FILL_CHUNK):
        hi = min(n, lo + FILL_CHUNK)
        ids = [str(i) for i in range(lo, hi)]
        if kind == "exact":
            hashes = [bytes(h) for h in rng.integers(0, 256, size=(hi - lo, 16), dtype=np.uint8)]
            _fill_exact(backend, index, hashes, ids)
        else:
            sigs = _signatures(rng, hi - lo)
            if sample is None:
                sample = sigs[:5000].copy()
            _fill_fuzzy(backend, index, sigs, ids, lo)
    if backend == "redis-cluster" and kind == "fuzzy":
        index._r.set(f"{NS}:fuzzy:ticket", n)
    index.close()
    return sample


def _fill_exact(backend, index, hashes, ids) -> None:
    """What claims would leave, written in bulk: SQLite rows in one transaction; on Redis one
    multi-field ``HSET`` per claims hash the chunk touches and, for the sharded layout, the source's
    member set too (what withdrawal reads), all in one pipeline."""
    if backend == "local":
        with immediate(index._db):
            index._db.executemany(
                "INSERT INTO claims VALUES (?, 'fill', ?)", list(zip(hashes, ids, strict=True))
            )
        return
    groups: dict[str, dict[bytes, str]] = {}
    for h, d in zip(hashes, ids, strict=True):
        key = index._claims if backend == "redis" else index._claims_of(h)
        groups.setdefault(key, {})[h] = doc_key("fill", d)
    pipe = index._r.pipeline(transaction=False) if backend == "redis" else index._r.pipeline()
    for key, mapping in groups.items():
        pipe.hset(key, mapping=mapping)
    pipe.sadd(index._members("fill") if backend == "redis-cluster" else index._members + "fill", *hashes)
    pipe.execute()


def _fill_fuzzy(backend, index, sigs, ids, offset) -> None:
    buckets = index.buckets(sigs)
    if backend == "local":
        docs = range(offset + 1, offset + 1 + len(ids))
        with immediate(index._db):
            index._db.executemany(
                "INSERT INTO docs VALUES (?, 'fill', ?, ?)",
                [(doc, d, s.tobytes()) for doc, d, s in zip(docs, ids, sigs, strict=True)],
            )
            index._db.executemany(
                "INSERT OR IGNORE INTO buckets VALUES (?, ?, ?)",
                sorted(
                    (band, int(b), doc)
                    for doc, row in zip(docs, buckets, strict=True)
                    for band, b in enumerate(row)
                ),
            )
        return
    if backend == "redis":
        pipe = index._r.pipeline(transaction=False)
        keys = index._bucket_keys(buckets)
        for i, d in enumerate(ids):
            key = doc_key("fill", d)
            pipe.hset(index._sigs, key, sigs[i].tobytes())
            for band in range(index.bands):
                pipe.sadd(keys[i * index.bands + band], key)
        pipe.execute()
        return
    # As claims leave it: one multi-field HSET per slot group of tickets (signature + key, state
    # kept), the source's member set of tickets, then the bucket sets by the index's own script.
    docs: dict[str, dict[int, bytes]] = {}
    state: dict[str, dict[int, bytes]] = {}
    tickets = list(range(offset + 1, offset + 1 + len(ids)))
    for i, (t, d) in enumerate(zip(tickets, ids, strict=True)):
        docs.setdefault(index._docs(t), {})[t] = sigs[i].tobytes() + doc_key("fill", d).encode()
        state.setdefault(index._state(t), {})[t] = b"k"
    pipe = index._r.pipeline()
    for key, mapping in [*docs.items(), *state.items()]:
        pipe.hset(key, mapping=mapping)
    pipe.sadd(index._members("fill"), *tickets)
    pipe.execute()
    index._bucket_script("add", list(range(offset + 1, offset + 1 + len(ids))), buckets)


# -- timed claims -------------------------------------------------------------------------------
def _worker(backend, kind, home, url, worker, seconds, batch, sample, out) -> None:
    os.environ.update(SINGLE_THREAD_ENV)
    layout = Layout.at(Path(home))
    rng = np.random.default_rng(1000 + worker)
    source = f"w{worker}"
    index = (
        open_fuzzy_index(backend, layout, url, NS, PARAMS)
        if kind == "fuzzy"
        else open_exact_index(backend, layout, url, NS)
    )
    docs, dropped, start, n = 0, 0, time.perf_counter(), 0
    cpu = time.process_time()
    while time.perf_counter() - start < seconds:
        ids = [f"{n + i}" for i in range(batch)]
        n += batch
        if kind == "exact":
            hashes = [bytes(h) for h in rng.integers(0, 256, size=(batch, 16), dtype=np.uint8)]
            owners = index.claim(source, list(zip(hashes, ids, strict=True)))
            dropped += sum(1 for h, d in zip(hashes, ids, strict=True) if owners[h] != doc_key(source, d))
        else:
            sigs = _signatures(rng, batch)
            near = rng.random(batch) < 1 / 3
            for i in np.flatnonzero(near):  # a near-duplicate of an indexed document: 8 values changed
                sigs[i] = sample[rng.integers(len(sample))]
                sigs[i, rng.choice(PARAMS["num_perm"], 8, replace=False)] = rng.integers(
                    0, 2**32, 8, dtype=np.uint64
                )
            outcome = index.claim(source, ids, sigs)
            dropped += sum(o is not None for o in outcome.owner)
        docs += batch
    wall = time.perf_counter() - start
    index.close()
    Path(out).write_text(
        json.dumps({"docs": docs, "dropped": dropped, "wall": wall, "cpu": time.process_time() - cpu})
    )


def measure(backend, kind, home, url, workers, seconds, batch, sample) -> dict:
    ctx = multiprocessing.get_context("spawn")
    Path(home).mkdir(parents=True, exist_ok=True)
    outs = [Path(home) / f"w{w}.json" for w in range(workers)]
    procs = [
        ctx.Process(target=_worker, args=(backend, kind, home, url, w, seconds, batch, sample, str(outs[w])))
        for w in range(workers)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    results = [json.loads(o.read_text()) for o in outs]
    docs = sum(r["docs"] for r in results)
    wall = max(r["wall"] for r in results)
    return {
        "claims_per_s": docs / wall,
        "us_per_claim_per_worker": 1e6 * sum(r["wall"] for r in results) / docs,
        "dropped_share": sum(r["dropped"] for r in results) / docs,
        "claimed": docs,
    }


def index_bytes(backend: str, kind: str, layout: Layout, cluster) -> int:
    if backend == "local":
        stem = "exact" if kind == "exact" else "fuzzy_lsh"
        return sum(p.stat().st_size for p in layout.index.glob(f"{stem}.sqlite*"))
    return cluster.used_memory()


def run_one(backend: str, shards: int, kind: str, n: int, args) -> dict:
    from tests.redis_cluster import LocalCluster

    work = Path(tempfile.mkdtemp(prefix="bench-claims-"))
    layout = Layout.at(work / "home")
    cluster, url, baseline = None, "", 0
    try:
        if backend == "redis-cluster":
            cluster = LocalCluster(work / "cluster", nodes=shards)
            url = cluster.url
        elif backend == "redis":
            cluster = LocalCluster.standalone(work / "redis")
            url = cluster.url + "/0"
        if cluster is not None:
            baseline = cluster.used_memory()
        t = time.perf_counter()
        sample = fill(backend, kind, n, layout, url)
        fill_s = time.perf_counter() - t
        size = index_bytes(backend, kind, layout, cluster) - baseline
        if sample is None:
            sample = _signatures(np.random.default_rng(0), 10)
        row = measure(backend, kind, str(layout.home), url, args.workers, args.seconds, args.batch, sample)
        row.update(
            backend=backend if backend != "redis-cluster" else f"redis-cluster x{shards}",
            kind=kind,
            indexed=n,
            bytes_per_doc=size / max(n, 1),
            fill_s=fill_s,
        )
        return row
    finally:
        if cluster is not None:
            cluster.stop()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


CONFIGS = {
    "local": ("local", 0),
    "redis": ("redis", 1),
    "cluster1": ("redis-cluster", 1),
    "cluster3": ("redis-cluster", 3),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000000", help="comma-separated index sizes")
    parser.add_argument("--kinds", default="exact,fuzzy")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--out", default="")
    args = parser.parse_args()
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        for kind in args.kinds.split(","):
            for name in args.configs.split(","):
                backend, shards = CONFIGS[name]
                row = run_one(backend, shards, kind, n, args)
                rows.append(row)
                print(
                    f"{row['kind']:5} N={n:>10,} {row['backend']:18} {row['claims_per_s']:>9,.0f} claims/s "
                    f"{row['us_per_claim_per_worker']:>7.1f} µs/claim/worker "
                    f"{row['bytes_per_doc']:>6.0f} B/doc "
                    f"dropped {row['dropped_share']:.2f} (fill {row['fill_s']:.0f} s)",
                    flush=True,
                )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
