"""Corpus-wide batch fuzzy dedup against the incremental index, on the same generated corpus.

Three components, each alone in a fresh process ("spawn", numeric libraries on one thread), each
reporting CPU and wall seconds and peak RSS (VmHWM, interpreter and imports included):

- ``signatures``: MinHash signatures of every document and nothing else, the baseline both methods
  pay (``MinHasher(128, 5, seed=1)``);
- ``batch``: :func:`refinery.dedup.corpus_dedup.corpus_dedup` over the whole corpus (signatures,
  band rows per band, candidate pairs, verification, union-find, one kept per component);
- ``incremental``: the pipeline's path, one partition per corpus shard (``shard-00000``, … in sorted
  order, 10,000 documents each), each claimed with ``SqliteFuzzyIndex.claiming`` and
  ``FuzzyDeduper`` over batches of ``--batch`` rows, into a fresh index; it also measures the index
  on disk (bytes per indexed document).

Then where the two differ, and why: documents only batch mode removes are split into *chained*
(estimated Jaccard with the document kept for their component below the threshold: joined through
another near-duplicate, A ~ B ~ C) and *direct*; documents only the incremental path removes are
pairs batch mode did not compare (large buckets are paired with anchors only).

    .venv/bin/python -m benchmarks.bench_corpus_dedup --docs 200000

Results: a table on stdout and ``benchmarks/out/corpus_dedup_<docs>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from collections import Counter
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from benchmarks.corpus import SHARD_DOCS, Corpus, ensure_corpus

OUT = Path(__file__).resolve().parent / "out"
SINGLE_THREAD_ENV = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _frames(corpus: Corpus, batch: int, limit: int):
    """(source, frame) in corpus order; the source is the shard a document comes from."""
    position = 0
    for record in corpus.iter_batches(batch, columns=("id", "text"), limit=limit):
        frame = record.to_pandas()
        shard = position // SHARD_DOCS
        # A batch never straddles shards: shards are multiples of the batch size used here.
        yield f"shard-{shard:05d}", frame
        position += len(frame)


def _measured(fn):
    @functools.wraps(fn)
    def run(*args) -> dict:
        cpu0, wall0 = time.process_time(), time.perf_counter()
        rss_setup = _status_kb("VmRSS")
        out = fn(*args)
        return {
            **out,
            "cpu_s": time.process_time() - cpu0,
            "wall_s": time.perf_counter() - wall0,
            "rss_setup_mb": rss_setup / 1024,
            "peak_rss_mb": _status_kb("VmHWM") / 1024,
        }

    return run


@_measured
def _signatures(corpus_path: str, docs: int, batch: int, out: str) -> dict:
    from refinery.dedup.minhash import MinHasher

    corpus = Corpus(Path(corpus_path), json.loads((Path(corpus_path) / "manifest.json").read_text()))
    hasher = MinHasher(128, 5, 1)
    checksum = 0
    for _, frame in _frames(corpus, batch, docs):
        checksum ^= int(np.bitwise_xor.reduce(hasher.signatures(frame["text"].tolist()), axis=None))
    return {"checksum": checksum}


@_measured
def _batch(corpus_path: str, docs: int, batch: int, out: str) -> dict:
    from refinery.dedup.corpus_dedup import CorpusDedupParams, corpus_dedup

    corpus = Corpus(Path(corpus_path), json.loads((Path(corpus_path) / "manifest.json").read_text()))
    result = corpus_dedup(_frames(corpus, batch, docs), CorpusDedupParams())
    result.table.to_parquet(out)
    return {"stats": result.stats}


@_measured
def _incremental(corpus_path: str, docs: int, batch: int, out: str) -> dict:
    import pandas as pd

    from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
    from refinery.dedup.lsh_index import SqliteFuzzyIndex

    corpus = Corpus(Path(corpus_path), json.loads((Path(corpus_path) / "manifest.json").read_text()))
    params = FuzzyDedupParams().index_params()
    rejected = []
    claim_s = 0.0
    with tempfile.TemporaryDirectory(dir=OUT) as tmp:
        path = Path(tmp) / "fuzzy_lsh.sqlite"
        source, run, deduper = None, None, None
        for name, frame in _frames(corpus, batch, docs):
            if name != source:
                if run is not None:
                    run.__exit__(None, None, None)
                source = name
                run = SqliteFuzzyIndex(path, params).claiming(source)
                deduper = FuzzyDeduper(run.__enter__())
            t0 = time.perf_counter()
            result = deduper(frame)
            claim_s += time.perf_counter() - t0
            rejected.append(result.rejected[["id", "duplicate_of", "similarity"]].assign(source=source))
        if run is not None:
            run.__exit__(None, None, None)
        index = SqliteFuzzyIndex(path, params)
        entries = index.count()
        index.close()
        disk = sum(p.stat().st_size for p in Path(tmp).iterdir())
    table = pd.concat(rejected, ignore_index=True)
    table.to_parquet(out)
    return {"index_entries": entries, "index_bytes": disk, "dedup_wall_s": claim_s}


def _in_process(fn, *args) -> dict:
    ctx = get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def compare(corpus: Corpus, docs: int, batch_table: Path, incremental_table: Path) -> dict:
    """Which documents each method removed, where they differ, and why."""
    import pandas as pd
    import pyarrow.parquet as pq

    kinds = pd.concat(
        [pq.read_table(f, columns=["id", "kind"]).to_pandas() for f in corpus.files], ignore_index=True
    ).iloc[:docs]
    bt = pd.read_parquet(batch_table)
    inc = pd.read_parquet(incremental_table)
    bt["kind"] = kinds["kind"].to_numpy()
    by_batch = set(bt.loc[~bt["kept"], "id"])
    by_incremental = set(inc["id"])
    only_batch = bt[bt["id"].isin(by_batch - by_incremental)]
    chained = only_batch[only_batch["similarity"] < 0.8]
    only_inc = by_incremental - by_batch
    return {
        "removed_batch": len(by_batch),
        "removed_incremental": len(by_incremental),
        "removed_by_both": len(by_batch & by_incremental),
        "only_batch": len(only_batch),
        "only_batch_chained": len(chained),
        "only_batch_direct": len(only_batch) - len(chained),
        "only_incremental": len(only_inc),
        "removed_batch_by_kind": dict(Counter(bt.loc[~bt["kept"], "kind"])),
        "only_batch_by_kind": dict(Counter(only_batch["kind"])),
        "largest_components": bt.loc[bt["kept"]]
        .nlargest(5, "component_size")[["id", "component_size"]]
        .values.tolist(),
        "only_incremental_sample": sorted(only_inc)[:10],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--corpus-docs", type=int, default=None, help="corpus to read (default: --docs)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch", type=int, default=5_000)
    parser.add_argument("--methods", default="signatures,batch,incremental")
    args = parser.parse_args()
    if SHARD_DOCS % args.batch:
        sys.exit(f"--batch must divide {SHARD_DOCS} so that batches do not straddle partitions")
    os.environ.update(SINGLE_THREAD_ENV)
    OUT.mkdir(parents=True, exist_ok=True)
    corpus = ensure_corpus(args.corpus_docs or args.docs, args.seed)
    docs = min(args.docs, corpus.docs)
    results: dict = {"docs": docs, "bytes": None, "batch_rows": args.batch}
    tables = {m: OUT / f"corpus_dedup_{docs}_{m}.parquet" for m in ("batch", "incremental")}
    runners = {"signatures": _signatures, "batch": _batch, "incremental": _incremental}
    for method in args.methods.split(","):
        print(f"running {method} on {docs:,} documents…", flush=True)
        results[method] = _in_process(
            runners[method], str(corpus.path), docs, args.batch, str(tables.get(method, OUT / "unused"))
        )
        print(json.dumps(results[method], indent=1, default=str), flush=True)
    if all(tables[m].exists() for m in tables) and {"batch", "incremental"} <= set(args.methods.split(",")):
        results["comparison"] = compare(corpus, docs, tables["batch"], tables["incremental"])
        print(json.dumps(results["comparison"], indent=1, default=str))
    inc = results.get("incremental")
    if inc:
        results["index_bytes_per_entry"] = inc["index_bytes"] / max(inc["index_entries"], 1)
        if "signatures" in results:
            extra = inc["peak_rss_mb"] - results["signatures"]["peak_rss_mb"]
            results["index_rss_bytes_per_entry"] = extra * 2**20 / max(inc["index_entries"], 1)
    path = OUT / f"corpus_dedup_{docs}.json"
    path.write_text(json.dumps(results, indent=1, default=str))
    print(f"→ {path}")


if __name__ == "__main__":
    main()
