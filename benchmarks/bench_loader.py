"""Schedule loader throughput against reading the same Parquet shards directly with pyarrow.

Builds a synthetic corpus (three sources), a shuffled multi-source manifest and its shards with
the real ``write_shards``, then reads the train split three ways in the same run:

- pyarrow: ``ParquetFile.iter_batches`` over the shard files, each column ``to_pylist``, one
  tuple per document (the floor: no position checks, no dicts);
- loader: ``ScheduleReader`` (one consumer), one dict per document;
- DataLoader: ``ScheduleDataset`` through ``torch.utils.data.DataLoader`` (batches of 64 collated
  by the dataset, ``batch_size=None``, num_workers 0 and 2), to show what a training loop sees.

and, with feedback on (adaptive selection, :mod:`refinery.schedule.adaptive`), the same number of
documents as the re-weighted stream:

- adaptive reader: ``AdaptiveReader`` (one consumer) following a pre-recorded weight log that
  changes every step (so it never waits): slot allocation plus reading by position through the
  row-group cache (read amplification: row groups decoded / row groups in the split);
- adaptive DataLoader: ``ScheduleDataset(feedback=...)`` with the loop calling
  ``OnlineDoremi.update`` after every batch (the live channel: log appends in the main process,
  reads in the workers), num_workers 0 and 2, against the static DataLoader of the same run.

Prints documents/s and the loader/pyarrow ratio (target ≥ 0.8).

    .venv/bin/python -m benchmarks.bench_loader --docs 200000 --chars 2000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.schedule.adaptive import AdaptiveParams, AdaptiveReader, OnlineDoremi
from refinery.schedule.loader import ScheduleReader
from refinery.schedule.shards import shard_dir, write_shards
from refinery.storage import Storage

WORDS = np.array(
    [
        "the",
        "of",
        "and",
        "to",
        "in",
        "data",
        "model",
        "training",
        "loader",
        "shard",
        "step",
        "token",
        "corpus",
        "mixture",
        "domain",
    ]
)


def build(root: Path, docs: int, chars: int, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    storage = Storage(root / "storage")
    per_source = docs // 3 + 1
    words_per_doc = max(1, chars // 6)
    sources = ["web", "books", "code"]
    for source in sources:
        lengths = rng.integers(words_per_doc // 2, words_per_doc * 3 // 2 + 1, size=per_source)
        flat = WORDS[rng.integers(len(WORDS), size=int(lengths.sum()))]
        cuts = np.cumsum(lengths)[:-1]
        texts = [" ".join(part) for part in np.split(flat, cuts)]
        path = storage.path("pretrain_corpus", source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(
            pa.table(
                {
                    "id": [f"{source}-{i}" for i in range(per_source)],
                    "text": texts,
                    "source": [source] * per_source,
                }
            ),
            path,
            compression="zstd",
        )
    pick = rng.integers(3, size=docs)
    ids = rng.integers(per_source, size=docs)
    src = np.array(sources)[pick]
    manifest = pa.table(
        {
            "split": ["train"] * docs,
            "position": np.arange(docs),
            "step": np.arange(docs) // 64,
            "phase": np.zeros(docs, np.int32),
            "shard": np.arange(docs) // 50_000,
            "domain": src,
            "source": src,
            "id": [f"{s}-{i}" for s, i in zip(src, ids, strict=True)],
            "epoch": np.zeros(docs, np.int32),
            "replay": np.zeros(docs, bool),
            "tokens": np.zeros(docs, np.int64),
            "difficulty": np.full(docs, np.nan),
        }
    )
    out = root / "storage" / "training_schedule"
    out.mkdir(parents=True)
    started = time.perf_counter()
    write_shards(storage, manifest, out, docs_per_step=64, shard_docs=50_000, row_group_docs=1024)
    print(f"shards written: {docs:,} documents in {time.perf_counter() - started:.2f}s (DuckDB join + sort)")
    return out


def read_pyarrow(root: Path) -> tuple[int, int]:
    n, chars = 0, 0
    for path in sorted(shard_dir(root, "train").glob("shard-*.parquet")):
        for batch in pq.ParquetFile(path).iter_batches(
            batch_size=1024, columns=["position", "step", "domain", "source", "id", "text"]
        ):
            cols = [c.to_pylist() for c in batch.columns]
            for row in zip(*cols, strict=True):
                n += 1
                chars += len(row[-1])
    return n, chars


def read_loader(root: Path) -> tuple[int, int]:
    n, chars = 0, 0
    for row in ScheduleReader(root, "train"):
        n += 1
        chars += len(row["text"])
    return n, chars


def read_dataloader(root: Path, workers: int) -> tuple[int, int]:
    from refinery.schedule.loader import ScheduleDataset

    dataset = ScheduleDataset(root, "train", batch_size=64)
    n, chars = 0, 0
    for batch in dataset.loader(num_workers=workers):
        n += len(batch["text"])
        chars += sum(map(len, batch["text"]))
    return n, chars


SYNTHETIC_LOSS = {"web": 1.0, "books": 2.0, "code": 3.0}  # code is "hardest": the weights move to it
FEEDBACK = AdaptiveParams(lag=4, eta=0.2, smoothing=0.05)


def record_log(root: Path, feedback: Path, steps: int) -> None:
    """A weight log for every step, as a loop feeding these losses back would write it."""
    rng = np.random.default_rng(1)
    with OnlineDoremi.for_schedule(root, "train", feedback, FEEDBACK) as mixer:
        names = mixer.domains
        for step in range(steps):
            losses = [SYNTHETIC_LOSS[d] + rng.normal(0, 0.3) for d in names]
            mixer.update(step, names, losses)


def read_adaptive(root: Path, feedback: Path) -> tuple[int, int]:
    n, chars = 0, 0
    reader = AdaptiveReader(root, "train", feedback, batch_size=64, columns=DEFAULT_READ)
    for row in reader:
        n += 1
        chars += len(row["text"])
    return n, chars


def read_adaptive_dataloader(root: Path, feedback: Path, workers: int) -> tuple[int, int]:
    from refinery.schedule.loader import ScheduleDataset

    with OnlineDoremi.for_schedule(root, "train", feedback, FEEDBACK) as mixer:
        dataset = ScheduleDataset(root, "train", batch_size=64, columns=DEFAULT_READ, feedback=feedback)
        n, chars = 0, 0
        for batch in dataset.loader(num_workers=workers):
            n += len(batch["text"])
            chars += sum(map(len, batch["text"]))
            mixer.update(int(batch["step"][0]), batch["domain"], [SYNTHETIC_LOSS[d] for d in batch["domain"]])
    return n, chars


DEFAULT_READ = ["position", "step", "domain", "source", "id", "text"]


def timed(fn, *args, repeats: int = 3) -> tuple[float, int, int]:
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        n, chars = fn(*args)
        best = min(best, time.perf_counter() - started)
    return best, n, chars


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=200_000)
    parser.add_argument("--chars", type=int, default=2_000, help="mean characters per document")
    parser.add_argument("--repeats", type=int, default=3, help="best of this many passes")
    parser.add_argument("--no-dataloader", action="store_true", help="skip the torch DataLoader passes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = build(Path(tmp), args.docs, args.chars)
        base_t, n, chars = timed(read_pyarrow, root, repeats=args.repeats)
        ours_t, n2, chars2 = timed(read_loader, root, repeats=args.repeats)
        assert (n, chars) == (n2, chars2), "the loader and pyarrow disagree on what the shards hold"
        print(f"documents: {n:,}, {chars / 1e6:.1f} M characters")
        print(f"pyarrow direct      : {n / base_t:12,.0f} docs/s  ({chars / base_t / 1e6:7.1f} MB/s)")
        print(f"ScheduleReader      : {n / ours_t:12,.0f} docs/s  ({chars / ours_t / 1e6:7.1f} MB/s)")
        print(f"ratio loader/pyarrow: {base_t / ours_t:.2f}x  (target ≥ 0.80x)")
        static_dl = {}
        if not args.no_dataloader:
            import torch  # noqa: F401 - imported before timing: not part of reading

            for workers in (0, 2):
                t, m, _ = timed(read_dataloader, root, workers, repeats=args.repeats)
                static_dl[workers] = t / m
                print(f"DataLoader workers={workers}: {m / t:12,.0f} docs/s  ({base_t / t:.2f}x of pyarrow)")

        print("-- feedback on (adaptive selection) --")
        feedback = Path(tmp) / "feedback"
        steps = -(-n // 64)
        started = time.perf_counter()
        record_log(root, feedback, steps)
        print(f"weight log recorded: {steps:,} updates in {time.perf_counter() - started:.2f}s")
        ad_t, an, _ = timed(read_adaptive, root, feedback, repeats=args.repeats)
        per_doc = {"pyarrow": base_t / n, "static": ours_t / n, "adaptive": ad_t / an}
        probe = AdaptiveReader(root, "train", feedback, batch_size=64, columns=DEFAULT_READ)
        for _ in probe.batches():
            pass
        groups, decoded = len(probe.groups), probe.decoded_groups
        print(
            f"AdaptiveReader      : {an / ad_t:12,.0f} docs/s  "
            f"({per_doc['pyarrow'] / per_doc['adaptive']:.2f}x of pyarrow, "
            f"{per_doc['static'] / per_doc['adaptive']:.2f}x of ScheduleReader); "
            f"row groups decoded {decoded:,} of {groups:,} ({decoded / max(groups, 1):.2f}x)"
        )
        if not args.no_dataloader:
            for workers in (0, 2):
                t, m, _ = timed(read_adaptive_dataloader, root, feedback, workers, repeats=args.repeats)
                print(
                    f"DataLoader+feedback workers={workers}: {m / t:10,.0f} docs/s  "
                    f"({base_t / n / (t / m):.2f}x of pyarrow, "
                    f"{static_dl[workers] / (t / m):.2f}x of the static DataLoader)"
                )


if __name__ == "__main__":
    main()
