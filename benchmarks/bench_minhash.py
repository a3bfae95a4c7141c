"""MinHash signatures per core: ours against datasketch and rensa, on the same real documents, in one run.

Each component runs in a fresh spawned process (numeric libraries on one thread) over the same
deterministic subset of the real corpus (``benchmarks/real_corpus.py``), ``--rounds`` times in
alternation so a busy machine slows every side alike; the table gives each round's MB/s per core
(UTF-8 bytes over the process's CPU seconds of the signature calls) and the ratios of the same
round. Components (``benchmarks/adapters.py``):

- ours: ``MinHasher(128, 5, seed=1).signatures`` over batches (the fuzzy dedup's signatures);
- ``--previous FILE``: the same class loaded from another ``minhash.py`` (an older commit's, e.g.
  ``git show main~1:refinery/dedup/minhash.py > /tmp/minhash_before.py``), for a before/after in
  the same run; its signatures are checked equal to ours on the first batch;
- datasketch: per document ``MinHash(num_perm=128)`` and ``update_batch`` of the lowercased word
  5-grams (its own loop, as a user writes it), and the faster variant with shared permutations;
- rensa 0.5: ``RMinHash`` fed the same 5-grams (Rust; its own hash family, so for speed only).

    PYTHONPATH=$PWD .venv/bin/python -m benchmarks.bench_minhash --docs 1500 --rounds 2
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import numpy as np

from benchmarks import adapters as A
from benchmarks.harness import SINGLE_THREAD_ENV, mbps, run_isolated
from benchmarks.real_corpus import ensure_real_corpus


def previous_minhash(corpus, batch_size: int, rows, path: str) -> dict:
    """``MinHasher`` of another minhash.py, timed like ours (its signatures checked against ours)."""
    from refinery.dedup.minhash import MinHasher

    spec = importlib.util.spec_from_file_location("minhash_previous", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["minhash_previous"] = module
    spec.loader.exec_module(module)
    hasher = module.MinHasher(A.NUM_PERM, A.NGRAM, A.SEED)
    hasher.signatures([A._warm_text()])  # warmed as ours is (adapters.ours_minhash), no more
    meter, first = A.Meter(), None
    for batch in A._source(corpus, batch_size, None, rows):
        texts = batch.column("text").to_pylist()
        meter.docs += len(texts)
        meter.bytes += A.batch_bytes(batch)
        with meter.timed():
            signatures = hasher.signatures(texts)
        if first is None:
            first = texts, signatures
    if not np.array_equal(first[1], MinHasher(A.NUM_PERM, A.NGRAM, A.SEED).signatures(first[0])):
        raise AssertionError(f"{path}'s signatures differ from the current code's")
    return meter.result("ours_previous", A.proc_status_kb("VmRSS"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real-mb", type=float, default=24)
    parser.add_argument("--docs", type=int, default=1500, help="documents of the subset (all sides)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--previous", default=None, help="another minhash.py to time beside ours")
    args = parser.parse_args()
    os.environ.update(SINGLE_THREAD_ENV)
    corpus = ensure_real_corpus(args.real_mb)
    rows = corpus.sample_rows(args.docs, 0)
    sketch = {"batch_size": 2_000, "rows": rows}
    plan = [("ours", A.ours_minhash, {"batch_size": 5_000, "rows": rows})]
    if args.previous:
        plan.append(
            (
                "ours, previous code",
                previous_minhash,
                {"batch_size": 5_000, "rows": rows, "path": args.previous},
            )
        )
    plan += [
        (
            "datasketch",
            A.datasketch_minhash,
            {**sketch, "shared_permutations": False},
        ),
        (
            "datasketch, shared permutations",
            A.datasketch_minhash,
            {**sketch, "shared_permutations": True},
        ),
        ("rensa", A.rensa_minhash, {"batch_size": 2_000, "rows": rows}),
    ]
    load = os.getloadavg()
    rates: dict[str, list[float]] = {name: [] for name, _, _ in plan}
    for r in range(args.rounds):
        for name, fn, kwargs in plan:
            out = run_isolated(fn, corpus=corpus, **kwargs)
            rates[name].append(mbps(out))
            print(f"round {r + 1}: {name}: {mbps(out):.2f} MB/s per core ({out['docs']} docs)", flush=True)
    print(
        f"\n{len(rows)} real documents; load average {load[0]:.2f} at start, {os.getloadavg()[0]:.2f} at end"
    )
    print("| component | " + " | ".join(f"round {r + 1} MB/s" for r in range(args.rounds)) + " | ours / it |")
    print("|---|" + "---:|" * (args.rounds + 1))
    for name, values in rates.items():
        ratio = ", ".join(f"{o / v:.2f}x" for o, v in zip(rates["ours"], values, strict=True))
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {ratio} |")


if __name__ == "__main__":
    main()
