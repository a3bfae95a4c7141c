"""The corpus-wide dedup's shuffle with its work folder and table on a local root against an object
store root (moto's S3 server on loopback), the same input, in one run.

:func:`refinery.dedup.corpus_shuffle.shuffle_dedup` on the local engine (every task in this process),
alternating local and S3 (``--repeats`` each), over the input of
:mod:`benchmarks.bench_corpus_dedup_scaling` (the real corpus plus generated short documents). On S3
every task lists the markers of the step it reads, reads and writes its files through
:mod:`pyarrow.fs` and puts one marker object: with moto in this process's machine the cost is
requests, not bytes (a real store adds its latency per request).

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_corpus_dedup_object_store \\
        --real-mb 20 --generated 60000
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.bench_corpus_dedup_scaling import build_input
from benchmarks.bench_ray_scaling import uptime
from benchmarks.bench_tables_object_store import CREDENTIALS, free_port, moto
from refinery.dedup.corpus_dedup import CorpusDedupParams
from refinery.dedup.corpus_shuffle import plan_pieces, shuffle_dedup
from refinery.engine.root_folder import RootFolder
from refinery.engine.tasks import InProcessTasks
from refinery.fs import child
from refinery.object_storage import ObjectStorage


def moto_root() -> tuple[subprocess.Popen, str]:
    """A moto S3 server on a free loopback port and a bucket's root URI on it."""
    port = free_port()
    server = moto(port)
    root = f"s3://bench/refinery?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
    ObjectStorage(root + "&allow_bucket_creation=true").fs.create_dir("bench")
    return server, root


def one_run(files, base: str, on_store: bool, piece_rows: int) -> tuple[float, int]:
    work = child(base, "_shuffle", "bench")
    started = time.perf_counter()
    _, result = shuffle_dedup(
        plan_pieces(files, piece_rows), CorpusDedupParams(), InProcessTasks(), work, 1, {}, {},
        table_folder=child(base, "table") if on_store else "",
    )  # fmt: skip
    seconds = time.perf_counter() - started
    RootFolder(work).remove()
    return seconds, int(result.stats["removed"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-mb", type=float, default=20)
    p.add_argument("--generated", type=int, default=60_000)
    p.add_argument("--piece-rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    os.environ.update(CREDENTIALS)
    server, root = moto_root()
    try:
        with tempfile.TemporaryDirectory(prefix="corpus-object-") as tmp:
            files, docs, mb = build_input(Path(tmp), args.real_mb, args.generated)
            print(f"{docs:,} documents, {mb:.1f} MB; {uptime()}", flush=True)
            times: dict[str, list[float]] = {"local root": [], "S3 (moto, loopback)": []}
            for _ in range(args.repeats):
                for label, base in (("local root", str(Path(tmp) / "root")), ("S3 (moto, loopback)", root)):
                    seconds, removed = one_run(files, base, base == root, args.piece_rows)
                    times[label].append(round(seconds, 2))
                    print(f"  {label}: {seconds:.2f} s, {removed} removed", flush=True)
            print(f"load after: {uptime()}")
            for label, values in times.items():
                print(f"| {label} | {sorted(values)[len(values) // 2]:.2f} | {values} |")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
