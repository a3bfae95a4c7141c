"""Ingest on Ray: one task per file or JSONL byte range, on 1 and on 2 workers, against one process.

The real corpus (:mod:`benchmarks.real_corpus`: Debian docs, man pages, CPython docstrings),
``--copies`` times, is written as an inbox source of ``--files`` JSONL files (``id`` and ``text``, in
corpus order); then the source is ingested

- ``sequential``: the local engine's reader, one pass in this process (the baseline);
- ``tasks, in process``: the distributed plan (pieces, line counts, id buckets, parts, manifest) run
  task after task in this process: what the task path costs over the sequential reading;
- ``Ray N worker(s)``: the same tasks as Ray tasks on a local Ray cluster of N CPUs (``ray.init
  (num_cpus=N)``), after a warm-up run that starts the workers.

Every run's output is checked equal (ids and line numbers, row for row) to the sequential one. Wall
seconds, MB/s of inbox bytes. The machine's load (``uptime``) before and after goes in the output:
figures taken on a shared machine say so.

    .venv/bin/python -m benchmarks.bench_ingest_tasks --max-mb 16 --copies 8 --files 2 --split-mb 8
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.real_corpus import ensure_real_corpus
from refinery.engine.tasks import InProcessTasks, RayTasks
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.ingest import ingest_with_reader
from refinery.kernel.ingest_tasks import ingest_in_tasks
from refinery.storage import Storage

OUT = Path(__file__).resolve().parent / "out"


def write_inbox(folder: Path, max_mb: float, files: int, copies: int) -> int:
    """The corpus ``copies`` times (ids made unique per copy) as ``files`` JSONL files of about equal
    size; returns the inbox bytes."""
    corpus = ensure_real_corpus(max_mb)
    folder.mkdir(parents=True)
    per_file = -(-corpus.docs * copies // files)
    outs = [(folder / f"part-{i}.jsonl").open("w", encoding="utf-8") for i in range(files)]
    n = 0
    for copy in range(copies):
        for batch in corpus.iter_batches(2_000, ("id", "text")):
            ids, texts = batch.column("id").to_pylist(), batch.column("text").to_pylist()
            for doc_id, text in zip(ids, texts, strict=True):
                record = {"id": f"{doc_id}#{copy}", "text": text}
                outs[min(n // per_file, files - 1)].write(json.dumps(record) + "\n")
                n += 1
    for out in outs:
        out.close()
    return sum(p.stat().st_size for p in folder.iterdir())


def ingest(
    folder: Path, root: Path, params: IngestParams, runner=None, workers: int = 1
) -> tuple[float, list]:
    storage = Storage(root)
    reader = SourceReader(folder, "bench", params)
    started = time.perf_counter()
    if runner is None:
        ingest_with_reader(reader, storage, "raw", {})
    else:
        ingest_in_tasks(reader, storage, "raw", {}, runner, workers, params.split_bytes, params)
    seconds = time.perf_counter() - started
    rows = storage.read("raw", "bench", columns=["id", "file", "line"])
    return seconds, rows.itertuples(index=False, name=None)


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-mb", type=float, default=16)
    parser.add_argument("--files", type=int, default=2)
    parser.add_argument("--split-mb", type=float, default=8, help="split_bytes, in MB")
    parser.add_argument("--copies", type=int, default=8, help="the corpus this many times (longer runs)")
    args = parser.parse_args()
    params = IngestParams(split_bytes=int(args.split_mb * 2**20))
    result = {"load_before": load(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="ingest-tasks-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "inbox" / "bench"
        size = write_inbox(folder, args.max_mb, args.files, args.copies)
        mb = size / 1e6
        seconds, want = ingest(folder, tmp / "seq", params)
        want = list(want)
        result["runs"].append({"method": "sequential (local engine)", "wall_s": seconds})
        seconds, got = ingest(folder, tmp / "inproc", params, InProcessTasks(), 1)
        assert list(got) == want
        result["runs"].append({"method": "tasks, in process", "wall_s": seconds})
        import ray

        for workers in (1, 2):
            ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False)
            try:
                ingest(folder, tmp / f"warm{workers}", params, RayTasks(), workers)  # workers up
                seconds, got = ingest(folder, tmp / f"ray{workers}", params, RayTasks(), workers)
            finally:
                ray.shutdown()
            assert list(got) == want
            result["runs"].append({"method": f"Ray {workers} worker(s)", "wall_s": seconds})
        pieces = sum(-(-p.stat().st_size // params.split_bytes) for p in folder.iterdir())
    result.update(
        load_after=load(),
        inbox_mb=round(mb, 2),
        documents=len(want),
        files=args.files,
        copies=args.copies,
        split_mb=args.split_mb,
        tasks=pieces,
        cpus=os.cpu_count(),
    )
    for run in result["runs"]:
        run["mb_s"] = round(mb / run["wall_s"], 2)
    ray1, ray2 = (r["wall_s"] for r in result["runs"][2:4])
    result["speedup_2_vs_1"] = round(ray1 / ray2, 2)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ingest_tasks.json").write_text(json.dumps(result, indent=1))
    print(f"\n{result['documents']:,} documents, {mb:.1f} MB of JSONL in {args.files} files, {pieces} tasks")
    print(f"load before: {result['load_before']}\nload after:  {result['load_after']}\n")
    print("| method | wall s | MB/s |\n|---|---:|---:|")
    for run in result["runs"]:
        print(f"| {run['method']} | {run['wall_s']:.1f} | {run['mb_s']:.2f} |")
    print(f"\n2 workers vs 1: {result['speedup_2_vs_1']}x")


if __name__ == "__main__":
    main()
