"""The token tables on a local root against an S3 root (moto's server on loopback), in the same run.

What an object-store root costs the unpartitioned tables built from the corpus
(:mod:`refinery.table_store`): ``tokenized_corpus`` (the partition's rows streamed to S3 by
``ObjectStorage.writer``), ``training_tokens`` (packed in a local staging folder, then uploaded:
Megatron shards, litdata chunks, index last, lineage table after) and the schedule's Parquet shards
(:func:`refinery.schedule.shards.build_shards`, then ``commit_folder``). Each is timed on both roots
over the same corpus, with the same tokenizer, so the ratio is the cost of the staging and the upload
(through moto, in-process Python on the same cores: a lower bound on neither a real S3's latency nor
its bandwidth, only a check that nothing is done twice or row by row).

Real text (Debian docs, man pages, CPython docstrings: benchmarks/real_corpus.py) and the generated
corpus (benchmarks/corpus.py).

    python -m benchmarks.bench_tables_object_store --real-mb 4 --docs 4000
"""

from __future__ import annotations

import os

os.environ.setdefault("RAYON_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from benchmarks.bench_tokens import schedule_manifest
from benchmarks.corpus import Corpus, ensure_corpus
from benchmarks.real_corpus import ensure_real_corpus
from refinery.kernel.report import provenance
from refinery.names import PRETRAIN_CORPUS, TRAINING_SCHEDULE
from refinery.object_storage import ObjectStorage
from refinery.paths import Layout
from refinery.schedule.shards import build_shards
from refinery.storage import Storage
from refinery.table_store import commit_folder, folder_staging
from refinery.tokens.publish import TrainingTokensParams, publish_training_tokens
from refinery.tokens.tokenizer import TokenizerParams, publish_tokenizer
from tests.unit.token_helpers import tokenize

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench",
    "AWS_EC2_METADATA_DISABLED": "true",
}


def moto(port: int) -> subprocess.Popen:
    server = subprocess.Popen(
        [Path(sys.executable).parent / "moto_server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            return server
        except OSError:
            if time.monotonic() > deadline:
                server.terminate()
                raise
            time.sleep(0.2)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def corpus_frame(corpus: Corpus, source: str) -> pd.DataFrame:
    table = pa.Table.from_batches(list(corpus.iter_batches(2_000, columns=("id", "text"))))
    n = table.num_rows
    return pd.DataFrame(
        {
            "id": [f"{source}-{i}" for i in range(n)],
            "text": table.column("text").to_pylist(),
            "source": source,
            "file": "docs.jsonl",
            "line": np.arange(1, n + 1, dtype=np.int64),
        }
    )


def manifest_for(frame: pd.DataFrame, source: str) -> pa.Table:
    return schedule_manifest(frame.assign(source=source), tokens=1)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(storage, layout: Layout, frame: pd.DataFrame, source: str) -> dict:
    """Seconds of each step on ``storage``; the same inputs every time."""
    schema = pa.Schema.from_pandas(frame, preserve_index=False)
    with storage.writer(PRETRAIN_CORPUS, source, schema, schema, {}) as writer:
        writer.write(kept=frame)
    params = TokenizerParams(vocab_size=4096, sample_documents=2_000, held_out_per_source=20)
    publish_tokenizer(storage, params, provenance("tokenizer", "all", params))
    out = {"tokenized_corpus": timed(lambda: tokenize(layout, storage, [source]))}
    manifest = manifest_for(frame, source)
    storage.write_table(TRAINING_SCHEDULE, manifest, {"asset": TRAINING_SCHEDULE})
    pack = TrainingTokensParams(seq_len=2048, shard_sequences=2048)
    out["training_tokens"] = timed(
        lambda: publish_training_tokens(storage, pack, provenance("training_tokens", "all", pack))
    )

    def schedule() -> None:
        staging = folder_staging(storage, TRAINING_SCHEDULE)
        build_shards(storage, manifest, staging, 64, 2_000, 256, split_names=["train"])
        commit_folder(storage, TRAINING_SCHEDULE, staging)

    out["schedule_shards"] = timed(schedule)
    return out


def written_mb(storage) -> float:
    if isinstance(storage, ObjectStorage):
        from refinery.fs import listing

        return sum(i.size or 0 for i in listing(storage.fs, storage.base, recursive=True)) / 1e6
    return sum(p.stat().st_size for p in Path(storage.root).rglob("*") if p.is_file()) / 1e6


def run(name: str, corpus: Corpus, root_uri: str, work: Path) -> list[dict]:
    frame = corpus_frame(corpus, "docs")
    warm = Layout.at(work / f"{name}-warm-up")  # imports (DuckDB, litdata) and caches out of the timings
    measure(Storage(warm.storage), warm, frame.head(200), "docs")
    rows = []
    local_layout = Layout.at(work / f"{name}-local")
    local = Storage(local_layout.storage)
    on_disk = measure(local, local_layout, frame, "docs")
    remote = ObjectStorage(f"{root_uri.split('?')[0]}/{name}?{root_uri.split('?')[1]}")
    on_s3 = measure(remote, Layout.at(work / f"{name}-s3"), frame, "docs")
    for step in on_disk:
        rows.append(
            {
                "corpus": name,
                "documents": len(frame),
                "text MB": round(corpus.bytes / 1e6, 2),
                "step": step,
                "local s": round(on_disk[step], 2),
                "S3 (moto) s": round(on_s3[step], 2),
                "S3 / local": round(on_s3[step] / on_disk[step], 2),
            }
        )
    print(
        f"{name}: {written_mb(local):.1f} MB on the local root, {written_mb(remote):.1f} MB on S3", flush=True
    )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-mb", type=float, default=4)
    parser.add_argument("--docs", type=int, default=4_000)
    args = parser.parse_args()
    os.environ.update(CREDENTIALS)
    port = free_port()
    server = moto(port)
    work = Path(tempfile.mkdtemp(prefix="bench-tables-"))
    try:
        root = f"s3://bench/refinery?endpoint_override=127.0.0.1:{port}&scheme=http&region=us-east-1"
        ObjectStorage(root + "&allow_bucket_creation=true").fs.create_dir("bench")
        rows = run("real", ensure_real_corpus(args.real_mb), root, work)
        rows += run("generated", ensure_corpus(args.docs), root, work)
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    frame = pd.DataFrame(rows)
    print(frame.to_markdown(index=False))


if __name__ == "__main__":
    main()
