"""``refinery search`` latency, cold and warm, with recall@10 against brute force, on real text.

Builds a home in a temporary folder: ``--docs`` documents of the real corpus
(benchmarks/real_corpus.py) as ``quality_scored`` of one partition, their embeddings (the default
embedder) and the vector index. Then:

- cold: ``refinery search`` as a fresh process (``--runs`` times, the median reported) with the
  default query path (ONNX Runtime, no torch import) and with ``REFINERY_SEARCH_BACKEND=torch``
  (the path before this change) as the baseline of the same run;
- warm: a :class:`refinery.retrieval.Searcher` holding the model, ``--queries`` queries (the first
  line of other documents) one at a time: median and 90th percentile per query, with and without
  the stage lookup (``with_stage``), and the query encoding alone. The stage lookup is measured
  twice in the same process: through the Searcher's :class:`StageLookup` (each stage file indexed
  by id once) and, as the baseline, through a DuckDB join of every stage file per query (how
  ``describe_hits`` read the stages before). The home holds the three stages a hit is followed
  through (``quality_scored``; ``semantic_deduplicated`` keeping 90 %, the rest in its rejected
  file; ``pretrain_corpus``), so every hit reads five files;
- recall@10 of the HNSW search against brute force (``exact=True``) over the same queries.

    .venv/bin/python -m benchmarks.bench_search --docs 400
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks.bench_embeddings import first_line, real_texts

REPO = Path(__file__).resolve().parents[1]
CLI = (
    "import sys; sys.argv = ['refinery', '--home', sys.argv[1], 'search', sys.argv[2], '--format', 'csv']; "
    "from refinery_cli.commands import main; sys.exit(main())"
)


def build_home(root: Path, ids: list[str], texts: list[str]) -> Path:
    from refinery.models.embedder import load_embedder
    from refinery.paths import Layout
    from refinery.quality.embeddings import write_embeddings
    from refinery.retrieval import VectorIndex
    from refinery.storage import Storage

    layout = Layout.at(root / "home")
    storage = Storage(layout.storage)
    path = storage.path("quality_scored", "real")
    path.parent.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": ids, "text": texts, "source": "real"})
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
    kept, dropped = frame[frame.index % 10 != 9], frame[frame.index % 10 == 9]
    for asset, part, rejected in (
        ("semantic_deduplicated", kept, False),
        ("semantic_deduplicated", dropped.assign(reason="semantic_duplicate", reason_detail="bench"), True),
        ("pretrain_corpus", kept, False),
    ):
        out = storage.rejected_path(asset, "real") if rejected else storage.path(asset, "real")
        out.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pandas(part, preserve_index=False), out)
    write_embeddings(storage, "quality_scored", "real", load_embedder(), {"asset": "document_embeddings"})
    VectorIndex.at(layout).sync(storage)
    return layout.home


class DuckdbLookup:
    """The stage lookup before StageLookup (the baseline): per query and stage file, a DuckDB join."""

    def rows(self, storage, asset: str, hits: pd.DataFrame, rejected: bool) -> pd.DataFrame:
        import duckdb

        files = []
        for source in sorted(hits["source"].unique()):
            path = storage.rejected_path(asset, source) if rejected else storage.path(asset, source)
            if path.exists():
                files.append(str(path))
        if not files:
            return pd.DataFrame(columns=["source", "id"])
        con = duckdb.connect()
        try:
            con.register("hits", pa.Table.from_pandas(hits[["source", "id"]], preserve_index=False))
            rel = con.sql(f"SELECT * FROM read_parquet({files!r}, union_by_name = true)")
            keep = [n for n, k in zip(rel.columns, rel.types, strict=True) if str(k) != "BLOB"]
            cols = ", ".join(f't."{c}"' for c in keep)
            return con.execute(
                f"SELECT {cols} FROM read_parquet({files!r}, union_by_name = true) t "
                "JOIN (SELECT DISTINCT source, id FROM hits) h ON t.source = h.source AND t.id = h.id"
            ).df()
        finally:
            con.close()


def cold(home: Path, query: str, runs: int, backend: str) -> list[float]:
    env = {**os.environ, "PYTHONPATH": str(REPO), "REFINERY_SEARCH_BACKEND": backend}
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CLI, str(home), query], env=env, cwd=REPO, capture_output=True, text=True
        )
        seconds.append(time.perf_counter() - started)
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
    return seconds


def per_query(fn, queries: list[str]) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds per query (CPU time is what a busy machine inflates least)."""
    fn(queries[0])  # warm-up
    wall, cpu = [], []
    for q in queries:
        started, cpu_started = time.perf_counter(), time.process_time()
        fn(q)
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return wall, cpu


def same_answers(a: pd.DataFrame, b: pd.DataFrame) -> bool:
    try:
        pd.testing.assert_frame_equal(a, b, check_dtype=False)
        return True
    except AssertionError as err:
        print(f"answers differ: {err}")
        return False


def ms(timings: tuple[list[float], list[float]]) -> str:
    wall, cpu = timings
    return (
        f"wall median {1e3 * statistics.median(wall):.1f} ms, p90 {1e3 * np.percentile(wall, 90):.1f} ms; "
        f"CPU median {1e3 * statistics.median(cpu):.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=400)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-mb", type=float, default=4)
    parser.add_argument("--cold-backends", default="torch,auto", help="torch (before), auto (onnx)")
    args = parser.parse_args()

    from refinery.retrieval import Searcher

    ids, texts = real_texts(args.docs + args.queries, args.max_mb)
    queries = [first_line(t) for t in texts[args.docs :]]
    load1 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        home = build_home(Path(tmp), ids[: args.docs], texts[: args.docs])
        print(f"home with {args.docs} real documents indexed; {len(queries)} queries")
        for backend in args.cold_backends.split(",") if args.runs else ():
            seconds = cold(home, queries[0], args.runs, backend)
            label = "torch (before)" if backend == "torch" else "onnx (default)"
            print(
                f"cold `refinery search`, {label}: median {statistics.median(seconds):.2f} s "
                f"(runs: {', '.join(f'{s:.2f}' for s in seconds)})"
            )
        searcher = Searcher.open(home)
        encode = per_query(lambda q: searcher.encoder.encode([q]), queries)
        hits = per_query(lambda q: searcher(q, 10, with_stage=False), queries)
        staged = per_query(lambda q: searcher(q, 10), queries)
        lookup = searcher.lookup
        searcher.lookup = DuckdbLookup()
        staged_duckdb = per_query(lambda q: searcher(q, 10), queries)
        fresh = Searcher(searcher.home, encoder=searcher.encoder, lookup=lookup)
        same = all(same_answers(searcher(q, 10), fresh(q, 10)) for q in queries[:10])
        searcher.lookup = lookup
        print(f"warm Searcher, encode only: {ms(encode)}")
        print(f"warm Searcher, hits only:   {ms(hits)}")
        print(f"warm Searcher, with stage (StageLookup):        {ms(staged)}")
        print(f"warm Searcher, with stage (DuckDB join, before): {ms(staged_duckdb)}")
        print(f"same answers with either lookup (10 queries): {same}")
        hnsw = searcher(queries, 10, with_stage=False)
        exact = searcher(queries, 10, exact=True, with_stage=False)
        recall = np.mean(
            [
                len(set(hnsw[hnsw["query"] == q]["id"]) & set(exact[exact["query"] == q]["id"])) / 10
                for q in dict.fromkeys(queries)
            ]
        )
        print(f"recall@10 of the index against brute force: {recall:.3f}")
    load2 = os.getloadavg()[0]
    print(f"1-minute load average: {load1:.2f} at start, {load2:.2f} at end ({os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
