"""SFT selection at scale: time and peak memory of k-means + per-cluster sampling on precomputed
embeddings, on one core, and what it buys over random sampling at the same budget.

The embeddings are synthetic (no model in the loop: the target is the selection itself):
``--groups`` Gaussian groups with Zipf-distributed sizes on the unit sphere in 384 dimensions
(MiniLM's width), so a few groups are huge and many are tiny, as in instruction data. Prints the
seconds, the peak RSS (and how much of it the embeddings themselves are), the number of k-means
clusters covered, and how many of the true groups the selected records cover compared with a
uniform random sample of the same size, measured in the same run.

    .venv/bin/python -m benchmarks.bench_selection --records 100000

Threads are pinned to one (OMP/OpenBLAS/MKL) before numpy loads; ``--threads`` changes that.
"""

from __future__ import annotations

import argparse
import os
import sys


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--groups", type=int, default=250, help="true groups (Zipf sizes; fewer than k)")
    parser.add_argument("--budget-fraction", type=float, default=0.01)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--allocation", default="proportional", choices=["proportional", "uniform"])
    args = parser.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)
    if "numpy" in sys.modules:
        raise RuntimeError("numpy was imported before the thread count was set")

    import resource
    import time

    import numpy as np

    from refinery.sft.select import SelectionParams, select

    rng = np.random.default_rng(0)
    sizes = np.maximum(1, (args.records / np.arange(1, args.groups + 1) ** 1.1)).astype(np.int64)
    sizes = np.maximum(1, np.round(sizes * args.records / sizes.sum()).astype(np.int64))
    truth = np.repeat(np.arange(args.groups), sizes)[: args.records]
    if len(truth) < args.records:
        truth = np.concatenate([truth, rng.integers(args.groups, size=args.records - len(truth))])
    centres = rng.standard_normal((args.groups, args.dim), dtype=np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.empty((args.records, args.dim), dtype=np.float32)
    for lo in range(0, args.records, 20_000):  # in blocks: keep generation out of the peak
        hi = min(lo + 20_000, args.records)
        block = centres[truth[lo:hi]] + 0.05 * rng.standard_normal((hi - lo, args.dim), dtype=np.float32)
        x[lo:hi] = block / np.linalg.norm(block, axis=1, keepdims=True)
    quality = rng.random(args.records)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    params = SelectionParams(
        budget_fraction=args.budget_fraction, allocation=args.allocation, within_cluster="quality"
    )
    started = time.perf_counter()
    sel = select(x, quality, params)
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    random_pick = rng.choice(args.records, size=int(sel.keep.sum()), replace=False)
    ours = len(np.unique(truth[sel.keep]))
    rand = len(np.unique(truth[random_pick]))
    present = len(np.unique(truth))
    counts = np.bincount(truth)
    print(
        f"true group sizes    : largest {counts.max():,}, median {int(np.median(counts)):,}, "
        f"smallest {counts.min():,}"
    )
    print(
        f"records {args.records:,} × {args.dim} float32 ({x.nbytes / 2**20:.0f} MiB), threads {args.threads}"
    )
    print(f"budget {sel.budget:,}, k-means k = {sel.k}, {sel.iterations} Lloyd iterations")
    print(f"selection time      : {seconds:.1f} s  (target < 60 s on one core)")
    print(
        f"peak RSS            : {peak:.0f} MiB  (before selection: {before:.0f} MiB, of which embeddings "
        f"{x.nbytes / 2**20:.0f} MiB)"
    )
    print(f"k-means clusters hit: {int((sel.taken > 0).sum())} of {sel.k} (coverage {sel.coverage:.0%})")
    print(
        f"true groups covered : selection {ours} / random {rand} of {present} present "
        f"({ours / max(rand, 1):.2f}x)"
    )


if __name__ == "__main__":
    main()
