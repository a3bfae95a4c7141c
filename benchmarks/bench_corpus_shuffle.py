"""Corpus-wide fuzzy dedup as shuffles: MB/s per core against datatrove's four MinHash stages, and
wall time on 1 against 2 Ray workers, on the same documents in the same run.

- ``shuffle, in process``: :func:`refinery.dedup.corpus_shuffle.shuffle_dedup` with every task in this
  process (the local engine), CPU seconds of this process;
- ``datatrove``: ``MinhashDedupSignature`` → ``MinhashDedupBuckets`` (one task per bucket) →
  ``MinhashDedupCluster`` → ``MinhashDedupFilter``, same shingles (5), 13 buckets × 8 hashes (our
  banding at 128 permutations and threshold 0.8), in this process, CPU seconds of this process;
- ``shuffle, Ray N workers``: the same tasks as Ray tasks on a local Ray cluster of N CPUs (``ray.init
  (num_cpus=N)``), wall seconds (the work is in the workers).

The corpus is real text (``benchmarks/real_corpus.py``: Debian docs, man pages, CPython docstrings) or
the generated one (``--generated N``: :mod:`tests.ray.driver_memory`'s short documents, 10% near-copies).

    flock /tmp/refinery-heavy.lock .venv/bin/python benchmarks/bench_corpus_shuffle.py --real
    flock /tmp/refinery-heavy.lock .venv/bin/python benchmarks/bench_corpus_shuffle.py --generated 200000

Writes benchmarks/out/corpus_shuffle_<corpus>.json and benchmarks/rates/corpus_shuffle.json (the
measured rates, machine-readable).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.dedup.corpus_dedup import CorpusDedupParams  # noqa: E402
from refinery.dedup.corpus_shuffle import plan_pieces, shuffle_dedup  # noqa: E402
from refinery.engine.tasks import InProcessTasks, RayTasks  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
RATES = ROOT / "benchmarks" / "rates"


def corpus_files(args, tmp: Path) -> tuple[str, list[tuple[str, Path]], int, int]:
    """(name, [(source, parquet)], documents, text bytes)."""
    if args.real:
        from benchmarks.real_corpus import ensure_real_corpus

        corpus = ensure_real_corpus()
        files = [(f"s{i:03d}", f) for i, f in enumerate(corpus.files)]
        name = "real"
    else:
        from refinery import names
        from refinery.paths import Layout
        from refinery.storage import Storage
        from tests.ray.driver_memory import write_corpus

        home = Layout.at(tmp / "gen")
        sources = write_corpus(home, args.generated)
        storage = Storage(home.storage)
        files = [(s, storage.require(names.EXACT_DEDUPLICATED, s)) for s in sources]
        name = f"generated{args.generated}"
    docs = text_bytes = 0
    for _, f in files:
        table = pq.read_table(f, columns=["text"])
        docs += table.num_rows
        text_bytes += sum(len(t.encode()) for t in table.column("text").to_pylist())
    return name, files, docs, text_bytes


def run_shuffle(files, runner, workers: int, work: Path, piece_rows: int) -> tuple[float, float, dict]:
    shutil.rmtree(work, ignore_errors=True)
    c0, w0 = time.process_time(), time.perf_counter()
    _, result = shuffle_dedup(
        plan_pieces(files, piece_rows), CorpusDedupParams(), runner, work, workers, {}, {}
    )
    return time.process_time() - c0, time.perf_counter() - w0, result.stats


def run_datatrove(files, tmp: Path) -> tuple[float, float, dict]:
    from datatrove.data import Document
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig,
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )

    from benchmarks.adapters import _fix_str_hashing, _quiet_datatrove

    _quiet_datatrove()
    config = MinhashConfig(n_grams=5, num_buckets=13, hashes_per_bucket=8, seed=1)

    def documents():
        for source, f in files:
            for batch in pq.ParquetFile(f).iter_batches(columns=["id", "text"]):
                for doc_id, text in zip(
                    batch.column("id").to_pylist(), batch.column("text").to_pylist(), strict=True
                ):
                    yield Document(text=text, id=f"{source}/{doc_id}")

    sigs, buckets, removed = tmp / "dt-sigs", tmp / "dt-buckets", tmp / "dt-remove"
    seconds = {}
    c0, w0 = time.process_time(), time.perf_counter()
    step = MinhashDedupSignature(output_folder=str(sigs), config=config)
    _fix_str_hashing(step)
    step.run(documents(), rank=0, world_size=1)
    seconds["signatures"] = time.process_time() - c0
    for b in range(config.num_buckets):
        MinhashDedupBuckets(input_folder=str(sigs), output_folder=str(buckets), config=config).run(
            rank=b, world_size=config.num_buckets
        )
    seconds["buckets"] = time.process_time() - c0 - sum(seconds.values())
    MinhashDedupCluster(input_folder=str(buckets), output_folder=str(removed), config=config).run(None, 0, 1)
    seconds["cluster"] = time.process_time() - c0 - sum(seconds.values())
    kept = sum(
        1 for _ in MinhashDedupFilter(input_folder=str(removed)).run(documents(), rank=0, world_size=1)
    )
    seconds["filter"] = time.process_time() - c0 - sum(seconds.values())
    return time.process_time() - c0, time.perf_counter() - w0, {"kept": kept, "cpu_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--real", action="store_true")
    which.add_argument("--generated", type=int)
    parser.add_argument("--piece-rows", type=int, default=20_000)
    parser.add_argument("--no-ray", action="store_true")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="corpus-shuffle-") as tmp_name:
        tmp = Path(tmp_name)
        name, files, docs, text_bytes = corpus_files(args, tmp)
        mb = text_bytes / 1e6
        cpu, wall, stats = run_shuffle(files, InProcessTasks(), 1, tmp / "work", args.piece_rows)
        rows.append(
            {"method": "shuffle, in process", "cpu_s": cpu, "wall_s": wall, "removed": stats["removed"]}
        )
        cpu, wall, dt = run_datatrove(files, tmp)
        rows.append({"method": "datatrove, 4 MinHash stages", "cpu_s": cpu, "wall_s": wall,
                     "removed": docs - dt["kept"], "stages": dt["cpu_seconds"]})  # fmt: skip
        if not args.no_ray:
            import ray

            for workers in (1, 2):
                ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
                try:
                    run_shuffle(files[:1], RayTasks(), workers, tmp / "warm", args.piece_rows)  # workers up
                    _, wall, stats = run_shuffle(files, RayTasks(), workers, tmp / "work", args.piece_rows)
                finally:
                    ray.shutdown()
                rows.append({"method": f"shuffle, Ray {workers} worker(s)", "cpu_s": None, "wall_s": wall,
                             "removed": stats["removed"]})  # fmt: skip
    for row in rows:
        row["mb_s_per_core"] = round(mb / row["cpu_s"], 2) if row["cpu_s"] else None
        row["mb_s_wall"] = round(mb / row["wall_s"], 2)
    result = {"corpus": name, "documents": docs, "text_mb": round(mb, 2), "runs": rows}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"corpus_shuffle_{name}.json").write_text(json.dumps(result, indent=1, default=float))
    RATES.mkdir(parents=True, exist_ok=True)
    rates_path = RATES / "corpus_shuffle.json"
    rates = json.loads(rates_path.read_text()) if rates_path.exists() else {}
    # refinery plan reads "corpus_fuzzy_dedup" (the real-text rate); generated corpora beside it.
    rates["corpus_fuzzy_dedup" if args.real else f"corpus_fuzzy_dedup_{name}"] = {
        "mb_s_per_core": rows[0]["mb_s_per_core"],
        "corpus": name,
        "documents": docs,
        "text_mb": round(mb, 2),
        "source": "benchmarks/bench_corpus_shuffle.py (shuffle, in process; CPU seconds)",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    rates_path.write_text(json.dumps(rates, indent=1, sort_keys=True) + "\n")
    print(f"\n{name}: {docs:,} documents, {mb:.1f} MB of text\n")
    print("| method | CPU s | wall s | MB/s per core | MB/s wall | removed |\n|---|---:|---:|---:|---:|---:|")
    for r in rows:
        cpu = f"{r['cpu_s']:.1f}" if r["cpu_s"] else "–"
        per_core = f"{r['mb_s_per_core']:.2f}" if r["mb_s_per_core"] else "–"
        wall = f"{r['wall_s']:.1f} | {per_core} | {r['mb_s_wall']:.2f}"
        print(f"| {r['method']} | {cpu} | {wall} | {r['removed']:,} |")


if __name__ == "__main__":
    main()
