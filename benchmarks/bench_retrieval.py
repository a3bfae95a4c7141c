"""Vector index candidates for refinery.retrieval, measured on one core: build, memory, QPS, recall@10.

Candidates (each run in its own subprocess, so its peak RSS is its own):

- ``brute``: blocked numpy matrix product + argpartition (the exact baseline, and ground truth);
- ``faiss-flat``: faiss ``IndexFlatIP`` (exact, BLAS);
- ``faiss-hnsw``: faiss ``IndexHNSWFlat`` (M 16, efConstruction 128, inner product) — what
  refinery.retrieval ships;
- ``usearch``: usearch HNSW, f32 (connectivity 16, expansion_add 128, inner product); also
  ``usearch-f16`` and ``usearch-i8`` (quantised storage);
- ``vss``: DuckDB's vss extension (HNSW, ``metric 'ip'``), one SQL query per vector, only when
  ``duckdb_extension_vss`` is importable (it pins duckdb 1.5.5; run it from a separate target dir:
  ``--vss-path /tmp/vsstest``).

Datasets (384-d float32, unit norm):

- ``mixture``: a clustered Gaussian mixture on the sphere, built to look like sentence embeddings
  rather than random unit vectors (random vectors in 384-d have no near neighbours, which makes every
  graph index look bad and nothing like real data): 32 topics uniform on the sphere, clusters of
  Zipf-distributed sizes around each topic, and each point its cluster centre plus a random
  32-dimensional low-rank spread plus a little isotropic noise. The script prints the mean top-1 /
  top-10 cosine and the mean cosine of random pairs for it and for the real run, so the likeness
  can be judged.
- ``real``: distinct paragraphs (≥ 200 characters) of the text files under /usr/share/doc on this
  machine, embedded with the project's MiniLM (``bundled:all-MiniLM-L6-v2``), cached in
  benchmarks/out/retrieval/. Queries are held-out paragraphs.

Times are wall seconds and CPU seconds of the measuring process (``time.process_time``): on a
shared machine the CPU figures are the per-core ones. Everything runs with one thread
(``OMP_NUM_THREADS=1``, faiss ``omp_set_num_threads(1)``, usearch ``threads=1``, DuckDB
``threads=1``, torch ``set_num_threads(1)``).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_retrieval \\
        --sizes 100000 --real 3000 --backends brute faiss-hnsw usearch usearch-f16
    ... --sizes 1000000 --real 0 --backends brute faiss-hnsw
    ... --sizes --real 0 --neighbours 200000 --neighbour-queries 20000
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

DIM = 384
K = 10
ROOT = Path(__file__).resolve().parents[1]
OUT = Path(__file__).resolve().parent / "out" / "retrieval"
EF_SWEEP = (16, 32, 64, 128, 256)
HNSW_M, HNSW_EF_ADD = 16, 128
BUILD_THREADS = int(os.environ.get("BENCH_BUILD_THREADS", "1"))  # 1 unless a run must finish on a busy box
MAX_CHARS = 600  # ~130 word pieces: the model reads at most 256, and CPU time on this machine is short


# -- data -----------------------------------------------------------------------------------------
def mixture(n: int, seed: int = 0, topics: int = 32, rank: int = 32) -> np.ndarray:
    """Clustered unit vectors: topics -> Zipf-sized clusters -> low-rank spread + isotropic noise."""
    rng = np.random.default_rng(seed)
    clusters = max(topics, n // 500)
    topic = rng.standard_normal((topics, DIM)).astype(np.float32)
    topic /= np.linalg.norm(topic, axis=1, keepdims=True)
    owner = rng.integers(topics, size=clusters)
    centre = topic[owner] + 0.9 * rng.standard_normal((clusters, DIM)).astype(np.float32) / np.sqrt(DIM)
    centre /= np.linalg.norm(centre, axis=1, keepdims=True)
    sizes = 1.0 / np.arange(1, clusters + 1) ** 0.9
    label = rng.choice(clusters, size=n, p=sizes / sizes.sum())
    scales = (0.55 / np.sqrt(np.arange(1, rank + 1))).astype(np.float32)
    out = np.empty((n, DIM), dtype=np.float32)
    for c in np.unique(label):
        rows = np.flatnonzero(label == c)
        basis = rng.standard_normal((rank, DIM)).astype(np.float32) / np.sqrt(DIM) * np.sqrt(rank)
        z = rng.standard_normal((len(rows), rank)).astype(np.float32) * scales
        noise = 0.35 * rng.standard_normal((len(rows), DIM)).astype(np.float32) / np.sqrt(DIM)
        out[rows] = centre[c] + (z @ basis) / np.sqrt(rank) + noise
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def usr_share_doc_paragraphs(root: str = "/usr/share/doc", min_chars: int = 200) -> list[str]:
    """Distinct whitespace-normalised paragraphs of the text files (gzip too) under ``root``."""
    out, seen = [], set()
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = Path(folder) / name
            if path.is_symlink():
                continue
            try:
                if name.endswith(".gz"):
                    with gzip.open(path) as fh:
                        raw = fh.read()
                else:
                    raw = path.read_bytes()
            except (OSError, EOFError):
                continue
            if b"\0" in raw[:4096]:
                continue
            for para in re.split(r"\n\s*\n", raw.decode("utf-8", "replace")):
                para = " ".join(para.split())
                if len(para) >= min_chars and para not in seen:
                    seen.add(para)
                    out.append(para[:MAX_CHARS])
    return out


def real_embeddings(n: int, seed: int = 0) -> np.ndarray:
    """``n`` paragraphs of /usr/share/doc embedded with the project's MiniLM (cached)."""
    path = OUT / f"real-usrsharedoc-n{n}-s{seed}.npy"
    if path.exists():
        return np.load(path)
    import torch

    from refinery.models.embedder import load_embedder

    torch.set_num_threads(1)
    paragraphs = usr_share_doc_paragraphs()
    if len(paragraphs) < n:
        raise SystemExit(f"only {len(paragraphs)} paragraphs under /usr/share/doc, asked for {n}")
    rng = np.random.default_rng(seed)
    texts = [paragraphs[i] for i in sorted(rng.choice(len(paragraphs), size=n, replace=False))]
    started = time.perf_counter()
    vectors = load_embedder(device="cpu", fp16=False).encode(texts, batch_size=32)
    print(f"embedded {n} real paragraphs in {time.perf_counter() - started:.0f}s", flush=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def brute_topk(x: np.ndarray, q: np.ndarray, k: int = K, block: int = 64) -> np.ndarray:
    """Exact top-k by inner product, in query blocks (the ground truth and the baseline)."""
    out = np.empty((len(q), k), dtype=np.int64)
    for s in range(0, len(q), block):
        sims = q[s : s + block] @ x.T
        idx = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(sims, idx, 1), axis=1, kind="stable")
        out[s : s + block] = np.take_along_axis(idx, order, 1)
    return out


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    hits = sum(len(set(f.tolist()) & set(t.tolist())) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def likeness(x: np.ndarray, q: np.ndarray, truth: np.ndarray, seed: int = 0) -> dict:
    """How clustered a dataset is: mean cosine to the 1st and 10th true neighbour, and of random pairs."""
    rng = np.random.default_rng(seed)
    top = np.einsum("qd,qkd->qk", q, x[truth])
    a, b = rng.integers(len(x), size=(2, 20_000))
    return {
        "top1_cos": round(float(top[:, 0].mean()), 3),
        "top10_cos": round(float(top[:, -1].mean()), 3),
        "random_pair_cos": round(float(np.einsum("nd,nd->n", x[a], x[b]).mean()), 3),
    }


# -- one candidate, in a subprocess ----------------------------------------------------------------
def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def _rss_mb() -> float:
    """Peak RSS of this process since it started (VmHWM; ru_maxrss would carry the parent's peak over
    fork + exec, and the driver holds the data and the embedder)."""
    return _status_mb("VmHWM")


def _current_rss_mb() -> float:
    return _status_mb("VmRSS")


def _timed_queries(search, q: np.ndarray, truth: np.ndarray, per_query: bool = False) -> dict:
    """Queries per second of wall time and per CPU-second of this process (the per-core figure that
    other work on a shared machine disturbs least), and recall@10."""
    started, cpu = time.perf_counter(), time.process_time()
    found = np.stack([search(v[None, :])[0] for v in q]) if per_query else search(q)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    return {
        "qps": round(len(q) / seconds, 1),
        "qps_cpu": round(len(q) / max(cpu_seconds, 1e-9), 1),
        "recall": round(recall_at_k(found, truth), 4),
    }


def worker(backend: str, data: Path, queries: Path, truth_path: Path, vss_path: str | None) -> dict:
    x = np.load(data)
    q = np.load(queries)
    truth = np.load(truth_path)
    base_rss = _current_rss_mb()
    result: dict = {"backend": backend, "n": len(x)}
    tmp = Path(tempfile.mkdtemp(prefix="bench-retrieval-"))
    started, cpu = time.perf_counter(), time.process_time()
    if backend == "brute":
        result["build_s"] = 0.0
        result["search"] = {"exact": _timed_queries(lambda b: brute_topk(x, b), q, truth)}
        result["search_one_at_a_time"] = _timed_queries(
            lambda b: brute_topk(x, b), q[:200], truth[:200], True
        )
    elif backend.startswith("faiss"):
        import faiss

        faiss.omp_set_num_threads(1)
        if backend == "faiss-flat":
            index = faiss.IndexFlatIP(DIM)
        else:
            index = faiss.IndexHNSWFlat(DIM, HNSW_M, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = HNSW_EF_ADD
        faiss.omp_set_num_threads(BUILD_THREADS)  # CPU seconds stay the per-core figure
        index.add(x)
        faiss.omp_set_num_threads(1)
        result["build_threads"] = BUILD_THREADS
        result["build_s"] = round(time.perf_counter() - started, 2)
        result["build_cpu_s"] = round(time.process_time() - cpu, 2)
        result["build_rss_mb"] = round(_rss_mb() - base_rss, 1)
        path = tmp / "index.faiss"
        t = time.perf_counter()
        faiss.write_index(index, str(path))
        result["save_s"] = round(time.perf_counter() - t, 3)
        result["disk_mb"] = round(path.stat().st_size / 2**20, 1)
        del index
        t = time.perf_counter()
        index = faiss.read_index(str(path))
        result["load_s"] = round(time.perf_counter() - t, 3)

        def run(b):
            return index.search(b, K)[1]

        if backend == "faiss-flat":
            result["search"] = {"exact": _timed_queries(run, q, truth)}
        else:
            result["search"] = {}
            for ef in EF_SWEEP:
                index.hnsw.efSearch = ef
                result["search"][f"ef{ef}"] = _timed_queries(run, q, truth)
    elif backend.startswith("usearch"):
        from usearch.index import Index

        dtype = {"usearch": "f32", "usearch-f16": "f16", "usearch-i8": "i8"}[backend]
        index = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=HNSW_M, expansion_add=HNSW_EF_ADD)
        index.add(np.arange(len(x), dtype=np.uint64), x, threads=1)
        result["build_s"] = round(time.perf_counter() - started, 2)
        result["build_cpu_s"] = round(time.process_time() - cpu, 2)
        result["build_rss_mb"] = round(_rss_mb() - base_rss, 1)
        path = tmp / "index.usearch"
        t = time.perf_counter()
        index.save(str(path))
        result["save_s"] = round(time.perf_counter() - t, 3)
        result["disk_mb"] = round(path.stat().st_size / 2**20, 1)
        del index
        t = time.perf_counter()
        index = Index.restore(str(path), view=True)  # memory-mapped: what a search process does
        result["load_s"] = round(time.perf_counter() - t, 3)

        def run(b):
            return index.search(b, K, threads=1).keys.astype(np.int64)

        result["search"] = {}
        for ef in EF_SWEEP:
            index.expansion_search = ef
            result["search"][f"ef{ef}"] = _timed_queries(run, q, truth)
        result["search"]["exact"] = _timed_queries(
            lambda b: index.search(b, K, threads=1, exact=True).keys.astype(np.int64), q, truth
        )
    elif backend == "vss":
        sys.path.insert(0, vss_path or "")
        import duckdb
        import duckdb_extension_vss
        import pyarrow as pa

        ext = next(Path(duckdb_extension_vss.__file__).parent.rglob("vss.duckdb_extension"))
        con = duckdb.connect(config={"threads": 1})
        con.execute(f"LOAD '{ext}'")
        table = pa.table(  # noqa: F841  (DuckDB reads the local variable by name)
            {"id": np.arange(len(x)), "vec": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), DIM)}
        )
        con.execute(f"CREATE TABLE t AS SELECT id, vec::FLOAT[{DIM}] AS vec FROM table")
        started, cpu = time.perf_counter(), time.process_time()
        con.execute(
            f"CREATE INDEX h ON t USING HNSW (vec) WITH (metric = 'ip', M = {HNSW_M}, "
            f"ef_construction = {HNSW_EF_ADD})"
        )
        result["build_s"] = round(time.perf_counter() - started, 2)
        result["build_cpu_s"] = round(time.process_time() - cpu, 2)
        result["build_rss_mb"] = round(_rss_mb() - base_rss, 1)
        sql = f"SELECT id FROM t ORDER BY array_negative_inner_product(vec, ?::FLOAT[{DIM}]) LIMIT {K}"
        plan = "\n".join(r[1] for r in con.execute("EXPLAIN " + sql, [q[0].tolist()]).fetchall())
        result["uses_hnsw_scan"] = "HNSW_INDEX_SCAN" in plan

        def run(b):
            return np.array([[r[0] for r in con.execute(sql, [b[0].tolist()]).fetchall()]])

        result["search"] = {}
        for ef in (32, 64, 128):
            con.execute(f"SET hnsw_ef_search = {ef}")
            result["search"][f"ef{ef}"] = _timed_queries(run, q[:300], truth[:300], per_query=True)
    else:
        raise SystemExit(f"unknown backend {backend}")
    result["peak_rss_mb_over_data"] = round(_rss_mb() - base_rss, 1)
    result["data_mb"] = round(x.nbytes / 2**20, 1)
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()
    return result


# -- driver --------------------------------------------------------------------------------------
def _best_at(result: dict, target: float = 0.95) -> str:
    """The fastest search setting that reaches recall ``target``."""
    ok = [
        (v["qps"], name, v["recall"]) for name, v in result.get("search", {}).items() if v["recall"] >= target
    ]
    if not ok:
        return "none reaches the target"
    qps, name, rec = max(ok)
    cpu = result["search"][name].get("qps_cpu", 0)
    return f"{name}: {qps:.0f} q/s ({cpu:.0f} per CPU-s) at recall {rec:.3f}"


def run_dataset(name: str, x: np.ndarray, q: np.ndarray, backends: list[str], vss_path: str | None) -> list:
    work = Path(tempfile.mkdtemp(prefix=f"bench-retrieval-{name}-"))
    np.save(work / "x.npy", x)
    np.save(work / "q.npy", q)
    started = time.perf_counter()
    truth = brute_topk(x, q)
    np.save(work / "truth.npy", truth)
    like = likeness(x, q, truth)
    print(
        f"\n== {name}: {len(x)} vectors, {len(q)} queries; "
        f"ground truth in {time.perf_counter() - started:.1f}s; {like}",
        flush=True,
    )
    results = []
    for backend in backends:
        load = os.getloadavg()[0]
        cmd = [
            sys.executable,
            "-m",
            "benchmarks.bench_retrieval",
            "--worker",
            backend,
            str(work / "x.npy"),
            str(work / "q.npy"),
            str(work / "truth.npy"),
        ]
        if vss_path:
            cmd += ["--vss-path", vss_path]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{backend}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res.update(dataset=name, load_before=round(load, 2), load_after=round(os.getloadavg()[0], 2), **like)
        results.append(res)
        print(
            f"{backend:12s} build {res['build_s']:8.2f}s ({res.get('build_cpu_s', 0):.1f} CPU-s)  "
            f"peak RSS over data {res['peak_rss_mb_over_data']:7.1f} MB"
            f"  disk {res.get('disk_mb', '-')} MB  load {res.get('load_s', '-')}s  best: {_best_at(res)}"
            f"  (load avg {res['load_before']}→{res['load_after']})",
            flush=True,
        )
        for setting, v in res["search"].items():
            print(
                f"{'':14s}{setting:8s} {v['qps']:9.1f} q/s {v['qps_cpu']:9.1f} q/CPU-s  "
                f"recall@10 {v['recall']:.4f}",
                flush=True,
            )
    for p in work.iterdir():
        p.unlink()
    work.rmdir()
    return results


# -- SemDeDup's claim check: load_claims + product against the index's bounded neighbour search --------
NEIGHBOUR_PARTS = 4


def _write_claims(root: Path, n: int, queries: int, seed: int = 0) -> np.ndarray:
    """NEIGHBOUR_PARTS partitions of document_embeddings (mixture vectors) and their
    semantic_deduplicated outputs (95% kept), as the pipeline leaves them on disk; returns the
    queries, held-out vectors of the same mixture (the partition being deduplicated)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.quality.embeddings import EMBEDDINGS_ASSET, embeddings_schema
    from refinery.storage import PROVENANCE_KEY, Storage

    storage = Storage(root / "storage")
    data = mixture(n + queries, seed)
    rng = np.random.default_rng(seed)
    per = n // NEIGHBOUR_PARTS
    meta = {PROVENANCE_KEY: json.dumps({"model": "bench", "dim": DIM}).encode()}
    for p in range(NEIGHBOUR_PARTS):
        x = data[p * per : (p + 1) * per]
        ids = [f"d{i}" for i in range(len(x))]
        path = storage.path(EMBEDDINGS_ASSET, f"p{p}")
        path.parent.mkdir(parents=True, exist_ok=True)
        with pq.ParquetWriter(path, embeddings_schema(DIM).with_metadata(meta)) as writer:
            for s in range(0, len(x), 2000):  # document_embeddings' row groups
                chunk = x[s : s + 2000]
                writer.write_table(
                    pa.table(
                        {
                            "id": ids[s : s + 2000],
                            "text_hash": ["0"] * len(chunk),
                            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(chunk.reshape(-1)), DIM),
                        },
                        schema=embeddings_schema(DIM),
                    )
                )
        kept = [i for i in ids if rng.random() < 0.95]
        out = storage.path("semantic_deduplicated", f"p{p}")
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({"id": kept}), out)
    return data[n:]


def neighbour_worker(mode: str, root: Path, queries: Path) -> dict:
    from refinery.quality.semantic_dedup import load_claims

    from refinery.retrieval import VectorIndex, kept_neighbours
    from refinery.storage import Storage

    storage = Storage(root / "storage")
    q = np.load(queries)
    base = _current_rss_mb()
    started, cpu = time.perf_counter(), time.process_time()
    if mode == "load_claims":  # today: every other partition's kept vectors in memory, then products
        claims = load_claims(storage, "query", "bench", DIM)
        best = np.empty(len(q), dtype=np.int64)
        for s in range(0, len(q), 1024):  # blocked here; plan() multiplies a whole cluster at once
            best[s : s + 1024] = (q[s : s + 1024] @ claims.vectors.T).argmax(axis=1)
        keys = [claims.keys[j] for j in best]
    else:
        index = VectorIndex(root / "index" / "vectors")
        found = kept_neighbours(storage, index, "query", q, model="bench", exact=mode == "exact")
        keys = found.keys
    seconds = time.perf_counter() - started
    return {
        "mode": mode,
        "seconds": round(seconds, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "peak_rss_mb_over_start": round(_rss_mb() - base, 1),
        "keys": keys,
    }


def run_neighbours(n: int, queries: int) -> list[dict]:
    from refinery.retrieval import VectorIndex
    from refinery.storage import Storage

    root = Path(tempfile.mkdtemp(prefix="bench-neighbours-"))
    q = _write_claims(root, n, queries)
    np.save(root / "q.npy", q)
    started = time.perf_counter()
    VectorIndex(root / "index" / "vectors").sync(Storage(root / "storage"))
    build = time.perf_counter() - started
    claims_mb = n * 0.95 * DIM * 4 / 2**20
    print(
        f"\n== nearest kept neighbour: {n} documents in {NEIGHBOUR_PARTS} partitions ({claims_mb:.0f} MB of "
        f"kept vectors), {queries} queries; index built in {build:.1f}s",
        flush=True,
    )
    results, exact_keys = [], None
    for mode in ("exact", "load_claims", "approx"):
        cmd = [sys.executable, "-m", "benchmarks.bench_retrieval", "--neighbour-worker", mode, str(root)]
        proc = subprocess.run([*cmd, str(root / "q.npy")], cwd=ROOT, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{mode}: failed\n{proc.stderr[-2000:]}", flush=True)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        keys = res.pop("keys")
        exact_keys = exact_keys or keys
        res["same_as_exact"] = round(
            float(np.mean([a == b for a, b in zip(keys, exact_keys, strict=True)])), 4
        )
        res.update(n=n, queries=queries, index_build_s=round(build, 1), load=round(os.getloadavg()[0], 2))
        results.append(res)
        print(
            f"{mode:12s} {res['seconds']:8.2f}s ({res['cpu_s']:.1f} CPU-s)  "
            f"peak RSS over start {res['peak_rss_mb_over_start']:8.1f} MB"
            f"  same nearest as exact: {res['same_as_exact']:.4f}  (load {res['load']})",
            flush=True,
        )
    shutil.rmtree(root)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="*", default=[100_000])
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--real", type=int, default=10_000, help="real paragraphs (0: skip the real run)")
    parser.add_argument("--real-queries", type=int, default=500)
    parser.add_argument(
        "--backends", nargs="*", default=["brute", "faiss-flat", "faiss-hnsw", "usearch", "usearch-i8"]
    )
    parser.add_argument("--vss-path", default=None, help="a pip --target dir holding duckdb 1.5.5 + vss")
    parser.add_argument("--json", type=Path, default=OUT / "results.json")
    parser.add_argument(
        "--neighbours", type=int, default=0, help="documents for the nearest-kept run (0: skip)"
    )
    parser.add_argument("--neighbour-queries", type=int, default=20_000)
    parser.add_argument("--neighbour-worker", nargs=3, help=argparse.SUPPRESS)
    parser.add_argument("--worker", nargs=4, metavar=("BACKEND", "X", "Q", "TRUTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.neighbour_worker:
        mode, root, q = args.neighbour_worker
        print(json.dumps(neighbour_worker(mode, Path(root), Path(q))))
        return
    if args.worker:
        backend, x, q, truth = args.worker
        print(json.dumps(worker(backend, Path(x), Path(q), Path(truth), args.vss_path)))
        return
    print(f"load average at start: {os.getloadavg()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    results = []
    if args.real:
        vectors = real_embeddings(args.real + args.real_queries)
        results += run_dataset(
            "real", vectors[: args.real], vectors[args.real :], args.backends, args.vss_path
        )
    for n in args.sizes:
        data = mixture(n + args.queries, seed=n)
        results += run_dataset(f"mixture-{n}", data[:n], data[n:], args.backends, args.vss_path)
    if args.neighbours:
        results += run_neighbours(args.neighbours, args.neighbour_queries)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=1))
    print(f"\nresults: {args.json}")


if __name__ == "__main__":
    main()
