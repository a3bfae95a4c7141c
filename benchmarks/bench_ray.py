"""The ray engine against the local engine on the same partition: scaling and overhead.

For each stage that the ray engine splits (clean_documents with language labels, heuristic_filtered),
the same upstream partition is run by:
- the local engine (in-process, one core: the baseline),
- the ray engine with 1 worker, on a local Ray cluster of 2 CPUs,
- the ray engine with 2 workers.
The outputs of every run are checked equal to the local engine's (rows, order, reasons). Reported:
wall seconds, MB/s, the speed-up of 2 workers over 1 (target ≥ 1.8x on a 2-core machine) and the
overhead of the ray engine with 1 worker against the local engine (target ≤ 1.3x).

    RAYON_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_ray --docs 20000   # the generated corpus
    RAYON_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_ray --real           # real_corpus.py's

Run it on an otherwise idle machine: both engines are timed in the same run, but Ray's two workers
need both cores. ``RAYON_NUM_THREADS=1`` keeps lingua (clean_documents' language labels) on one
thread per process; without it lingua's Rayon pool uses every core from one worker, and one worker
already occupies the machine (measured: 1.01x for two workers then).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import pandas as pd

from refinery import names
from refinery.clean.cleaning import Cleaner
from refinery.engine.local import LocalEngine
from refinery.engine.ray_engine import RayEngine
from refinery.filters.language_routing import LanguageFilter, LanguageRouting
from refinery.kernel.spec import StageContext
from refinery.paths import Layout
from refinery.schema import DOCUMENT_SCHEMA
from refinery.stages import text
from refinery.storage import Storage

OUT = Path(__file__).resolve().parent / "out" / "ray"
STAGES = {
    names.CLEAN_DOCUMENTS: (text.CLEAN_DOCUMENTS, lambda run: Cleaner(run.params, run.params.language_id())),
    # As the asset runs it: the main languages' side of the language routing.
    names.HEURISTIC_FILTERED: (
        text.HEURISTIC_FILTERED,
        lambda run: LanguageFilter(LanguageRouting(), run.params, main=True),
    ),
}


def load_documents(args) -> pd.DataFrame:
    if args.real:
        from benchmarks.real_corpus import ensure_real_corpus

        corpus = ensure_real_corpus()
        frame = pd.concat(
            [pd.read_parquet(f, columns=["id", "text"]) for f in corpus.files], ignore_index=True
        )
    else:
        from benchmarks.corpus import ensure_corpus

        corpus = ensure_corpus(args.docs)
        frame = pd.concat([b.to_pandas() for b in corpus.iter_batches(5_000)], ignore_index=True)
    return frame.head(args.docs).assign(source="bench", url=None, meta=None, file="f", line=1)


def write_raw(storage: Storage, frame: pd.DataFrame, group_rows: int) -> None:
    with storage.writer(names.RAW_DOCUMENTS, "bench", DOCUMENT_SCHEMA, DOCUMENT_SCHEMA, {}) as writer:
        for start in range(0, len(frame), group_rows):
            writer.write(frame.iloc[start : start + group_rows], None)


def context(storage: Storage, spec, params, engine) -> StageContext:
    return StageContext(spec=spec, source="bench", params=params, layout=Layout.at(storage.root.parent),
                        storage=storage, engine=engine, provenance={"asset": spec.name})  # fmt: skip


def run(storage: Storage, stage: str, engine) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    spec, make = STAGES[stage]
    params = spec.params()
    started = time.perf_counter()
    engine.run(context(storage, spec, params, engine), make)
    seconds = time.perf_counter() - started
    return seconds, storage.read(stage, "bench"), storage.read(stage, "bench", rejected=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, default=20_000)
    parser.add_argument("--real", action="store_true", help="use the corpus of benchmarks/real_corpus.py")
    parser.add_argument("--slice-rows", type=int, default=1_000)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    frame = load_documents(args)
    megabytes = frame["text"].str.len().sum() / 1e6
    storage = Storage(OUT / "storage")
    write_raw(storage, frame, args.slice_rows)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    results = []
    for stage in STAGES:
        base_s, kept, rejected = run(storage, stage, LocalEngine())
        row = {
            "stage": stage,
            "documents": len(frame),
            "MB": round(megabytes, 2),
            "local_s": round(base_s, 2),
        }
        for workers in (1, 2):
            engine = RayEngine(address="local", workers=workers, slice_rows=args.slice_rows)
            cold, _, _ = run(storage, stage, engine)  # each stage run starts its actor pool: counted here
            seconds, ray_kept, ray_rejected = run(storage, stage, engine)
            pd.testing.assert_frame_equal(ray_kept, kept, check_dtype=False)
            pd.testing.assert_frame_equal(ray_rejected, rejected, check_dtype=False)
            row[f"ray{workers}_s"] = round(seconds, 2)
            row[f"ray{workers}_cold_s"] = round(cold, 2)
        row["local_MB_s"] = round(megabytes / base_s, 2)
        row["ray2_MB_s"] = round(megabytes / row["ray2_s"], 2)
        row["speedup_2_over_1"] = round(row["ray1_s"] / row["ray2_s"], 2)
        row["overhead_ray1_vs_local"] = round(row["ray1_s"] / base_s, 2)
        row["overhead_ray1_cold_vs_local"] = round(row["ray1_cold_s"] / base_s, 2)
        run(storage, stage, LocalEngine())  # the next stage reads the local engine's output
        results.append(row)
        print(json.dumps(row), flush=True)
    ray.shutdown()
    (OUT / "results.json").write_text(json.dumps({"real": args.real, "rows": results}, indent=1))


if __name__ == "__main__":
    main()
