"""What a worker writing one slice of ``sft_selected`` holds to look its rows' decisions up:
the partition's decisions as an id dict (the code before issue 18's fix, the baseline, measured in
the same run) against its slice's decision file read a batch at a time
(refinery.sft.selection_decisions.PieceDecisions).

A plan of ``--records`` records is made as the stage makes it (refinery.sft.selection_plan:
embeddings written to files, k-means on the bounded sample, assign, choose, and now collect into
one decision file per slice of ``--slice-rows``), from generated vectors (dimension ``--dim``:
the lookup does not read vectors, so their size does not matter here) and ids shaped as the SFT
ingest's (``doc-`` and 20 hex digits). Then, each in a fresh process:

- **old**: the previous worker's lookup: ``load_decisions`` (id -> (cluster, distance, keep) for
  every record of the partition) built when the processor is, then each batch of the slice looked
  up in it (the previous ``SftSelector.__call__``, replicated here);
- **new**: ``SftSelector.decided`` on the same plan, each batch of the slice through it.

Per variant: the peak of Python's allocations (tracemalloc), the peak of Arrow's pool (not seen by
tracemalloc), the growth of the process's peak RSS (VmHWM, reset first) over its RSS before the
lookup, the decisions read, and seconds; for one slice, and for one worker writing every slice in
turn (the one-worker case).

    .venv/bin/python -m benchmarks.bench_sft_decisions --records 200000
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "out" / "sft_decisions"
BATCH = 1024  # the stage's batch rows


def ids(start: int, stop: int) -> list[str]:
    return [f"doc-{(i * 0x9E3779B97F4A7C15) % (1 << 80):020x}" for i in range(start, stop)]


def make_plan(folder: Path, records: int, slice_rows: int, dim: int) -> dict:
    from refinery.engine.tasks import InProcessTasks
    from refinery.sft.select import SelectionParams
    from refinery.sft.selection_plan import new_plan_folder, plan_selection, save_counts, write_embedded

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(64, dim)).astype(np.float32)
    plan_dir = new_plan_folder(folder, "bench")
    for lo in range(0, records, 50_000):
        hi = min(records, lo + 50_000)
        x = centres[rng.integers(0, 64, hi - lo)] + 0.3 * rng.normal(size=(hi - lo, dim)).astype(np.float32)
        frame = pd.DataFrame({"id": ids(lo, hi), "kind": "instruction", "dedup_text": "t", "quality": np.nan})
        write_embedded(Path(plan_dir) / "embed", np.arange(lo, hi), frame, x)
    pieces = [min(slice_rows, records - lo) for lo in range(0, records, slice_rows)]
    params = SelectionParams(budget_fraction=0.2, n_clusters=50, kmeans_sample_rows=20_000)
    started = time.perf_counter()
    plan = plan_selection(plan_dir, params, InProcessTasks(), 2, pieces)
    save_counts(plan)
    return {
        "folder": str(plan_dir),
        "pieces": pieces,
        "params": params.model_dump(),
        "plan_seconds": round(time.perf_counter() - started, 2),
    }


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) * 1024
    return 0


def old_worker(folder: str, params, slices: list[tuple[int, int, int]]):
    """The previous worker: every record's decision in a dict, then the slice's rows looked up."""
    from refinery.batch import split_batch
    from refinery.sft.selection_plan import load_counts, load_decisions

    sizes, taken = load_counts(folder)
    by_id = load_decisions(folder)
    for _, lo, hi in slices:
        for b in range(lo, hi, BATCH):
            batch = pd.DataFrame({"id": ids(b, min(hi, b + BATCH))})
            info = [by_id[i] for i in batch["id"]]
            out = batch.assign(cluster=[c for c, _, _ in info], cluster_distance=[d for _, d, _ in info])
            reasons = [
                None if keep else ("not_selected", f"cluster {c}: {sizes[c]} → {taken[c]}")
                for c, _, keep in info
            ]
            split_batch(out, reasons)
    return len(by_id)


def new_worker(folder: str, params, slices: list[tuple[int, int, int]]):
    """This code: the worker's selector, each slice's batches under the engine's slice context."""
    from refinery.engine.slices import Slice, processing
    from refinery.sft.selector import SftSelector

    selector = SftSelector.decided(folder, params)
    for index, lo, hi in slices:
        with processing(Slice(index, "f", (), hi - lo)):
            for b in range(lo, hi, BATCH):
                selector(pd.DataFrame({"id": ids(b, min(hi, b + BATCH))}))
    return selector.decisions.read


def measure(variant: str, plan: dict, which: str, trace: bool) -> dict:
    """One variant in this (fresh) process: ``which`` is ``one`` (slice 0) or ``all`` (every slice).
    ``trace``: Python's allocations traced (tracemalloc's own bookkeeping then inflates the RSS, so
    the RSS is taken in another process, untraced)."""
    import pyarrow as pa

    from refinery.sft.select import SelectionParams

    params = SelectionParams.model_validate(plan["params"])
    starts = np.r_[0, np.cumsum(plan["pieces"])].tolist()
    slices = [(i, starts[i], starts[i + 1]) for i in range(len(plan["pieces"]))]
    slices = slices[:1] if which == "one" else slices
    run = old_worker if variant == "old" else new_worker
    # the imports both variants make, before the measurement
    import refinery.batch
    import refinery.engine.slices
    import refinery.sft.selector  # noqa: F401

    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    rss_before = _status("VmRSS")
    pool = pa.default_memory_pool()
    arrow_before = pool.max_memory()
    if trace:
        tracemalloc.start()
    started = time.perf_counter()
    read = run(plan["folder"], params, slices)
    seconds = time.perf_counter() - started
    python_peak = tracemalloc.get_traced_memory()[1] if trace else 0
    tracemalloc.stop()
    return {
        "variant": variant,
        "slices": which,
        "rows_written": int(sum(hi - lo for _, lo, hi in slices)),
        "decisions_read": int(read),
        "python_peak_mb": round(python_peak / 2**20, 2),
        "arrow_peak_mb": round((pool.max_memory() - arrow_before) / 2**20, 2),
        "rss_growth_mb": round((_status("VmHWM") - rss_before) / 2**20, 1),
        "seconds": round(seconds, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=200_000)
    parser.add_argument("--slice-rows", type=int, default=20_000)
    parser.add_argument("--dim", type=int, default=16)
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)  # variant, plan, which, trace
    args = parser.parse_args()
    if args.measure:
        variant, plan_file, which, trace = args.measure
        plan = json.loads(Path(plan_file).read_text())
        print(json.dumps(measure(variant, plan, which, trace == "trace")))
        return
    import shutil

    shutil.rmtree(OUT, ignore_errors=True)
    OUT.mkdir(parents=True)
    plan = make_plan(OUT, args.records, args.slice_rows, args.dim)
    plan_file = OUT / "plan.json"
    plan_file.write_text(json.dumps(plan))
    rows = []
    for which in ("one", "all"):
        for variant in ("old", "new"):
            runs = {}
            for mode in ("rss", "trace"):
                cmd = [sys.executable, "-m", "benchmarks.bench_sft_decisions", "--measure"]
                done = subprocess.run(
                    [*cmd, variant, str(plan_file), which, mode], check=True, capture_output=True, text=True
                )
                runs[mode] = json.loads(done.stdout)
            rows.append({**runs["rss"], "python_peak_mb": runs["trace"]["python_peak_mb"]})
    pieces = len(plan["pieces"])
    print(f"{args.records:,} records, {pieces} slices of {args.slice_rows:,}; plan {plan['plan_seconds']} s")
    print("| worker writes | lookup | decisions read | Python peak MB | Arrow peak MB | RSS growth MB | s |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        where = "slice 0" if r["slices"] == "one" else "every slice"
        print(
            f"| {where} ({r['rows_written']:,} rows) | {r['variant']} | {r['decisions_read']:,} "
            f"| {r['python_peak_mb']} | {r['arrow_peak_mb']} | {r['rss_growth_mb']} | {r['seconds']} |"
        )
    result = {"records": args.records, "plan": plan, "rows": rows}
    (OUT / "results.json").write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
