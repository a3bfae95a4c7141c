"""SFT selection (sft_selected) on the Ray engine with 1 and 2 workers against the local engine.

One partition of SFT records is selected by the stage's own maker (assets/sft.py: embeddings of
``dedup_text`` with the bundled MiniLM on the CPU, k-means on a bounded sample, assignment and
per-cluster choice as tasks, rows written by the workers on Ray), by:
- the local engine (in-process: the baseline, measured in the same run),
- the Ray engine with 1 worker (one model actor, one task at a time), on a local Ray cluster of 2 CPUs,
- the Ray engine with 2 workers.
Every run's kept and rejected rows are checked equal to the local engine's (distances within
float noise). Reported: wall seconds (cold: the first run of an engine, which starts its actors
and loads the model in each; warm: the second), and the speed-ups.

Records are real text (``--real``: the prompts are consecutive ``--chars``-character pieces of
the documents of benchmarks/real_corpus.py) or generated prose (refinery.sample.prose).

    .venv/bin/python -m benchmarks.bench_sft_ray --records 2000 --real
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

OUT = Path(__file__).resolve().parent / "out" / "sft_ray"


def prompts(args) -> list[str]:
    if args.real:
        from benchmarks.real_corpus import ensure_real_corpus

        corpus = ensure_real_corpus(max_mb=args.real_mb)
        texts = pd.concat([pd.read_parquet(f, columns=["text"]) for f in corpus.files], ignore_index=True)
        pieces = [t[i : i + args.chars] for t in texts["text"] for i in range(0, len(t), args.chars)]
        return [p for p in pieces if p.strip()][: args.records]
    from refinery.sample import prose

    rng = random.Random(7)
    return [prose.article(rng, paragraphs=1)[: args.chars] for _ in range(args.records)]


def write_upstream(storage, texts: list[str], group_rows: int) -> None:
    from refinery.sft.schema import SFT_SCHEMA

    n = len(texts)
    frame = pd.DataFrame(
        {
            "id": [f"r{i:06d}" for i in range(n)], "source": "bench", "kind": "instruction",
            "format": "alpaca", "system": None, "prompt": texts, "response": "An answer.",
            "rejected_response": None, "messages": "[]", "responses": None, "turns": 1,
            "quality": None, "meta": None, "dedup_text": texts, "file": "f.jsonl", "line": range(1, n + 1),
        }
    )  # fmt: skip
    path = storage.path("sft_checked", "bench")
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame[SFT_SCHEMA.names], schema=SFT_SCHEMA, preserve_index=False)
    pq.write_table(table, path, row_group_size=group_rows)


def run(storage, engine, params) -> tuple[float, pd.DataFrame, pd.DataFrame]:
    from assets.sft import make_selection
    from refinery.kernel.execute import execute_stage
    from refinery.kernel.spec import StageContext, StageResources
    from refinery.models.device import Compute
    from refinery.models.embedder import EmbedderLoader
    from refinery.paths import Layout
    from refinery.stages import sft

    loader = EmbedderLoader(compute=Compute("cpu", 32, False, 0, 0.0))
    ctx = StageContext(
        spec=sft.SFT_SELECTED, source="bench", params=params, layout=Layout.at(storage.root.parent),
        storage=storage, engine=engine, resources=StageResources({"embedder": loader}),
        provenance={"asset": "sft_selected"},
    )  # fmt: skip
    started = time.perf_counter()
    execute_stage(ctx, make_selection)
    seconds = time.perf_counter() - started
    kept = storage.read("sft_selected", "bench")
    return seconds, kept, storage.read("sft_selected", "bench", rejected=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--chars", type=int, default=400)
    parser.add_argument("--real", action="store_true", help="prompts from benchmarks/real_corpus.py")
    parser.add_argument("--real-mb", type=float, default=2, help="size of the real corpus to build")
    parser.add_argument("--slice-rows", type=int, default=250)
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    import ray

    from refinery.engine.local import LocalEngine
    from refinery.engine.ray_engine import RayEngine
    from refinery.sft.select import SelectionParams
    from refinery.storage import Storage

    storage = Storage(OUT / "storage")
    texts = prompts(args)
    write_upstream(storage, texts, args.slice_rows)
    params = SelectionParams(budget_fraction=0.2, kmeans_sample_rows=max(100, args.records // 2))
    load = os.getloadavg()
    base_s, kept, rejected = run(storage, LocalEngine(), params)
    row = {"records": len(texts), "real": args.real, "local_s": round(base_s, 2)}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, _node_ip_address="127.0.0.1")
    try:
        for workers in (1, 2):
            engine = RayEngine(address="local", workers=workers, slice_rows=args.slice_rows)
            cold, _, _ = run(storage, engine, params)
            seconds, ray_kept, ray_rejected = run(storage, engine, params)
            for got, want in ((ray_kept, kept), (ray_rejected, rejected)):
                pd.testing.assert_frame_equal(got, want, check_dtype=False, rtol=1e-4)
            row[f"ray{workers}_cold_s"] = round(cold, 2)
            row[f"ray{workers}_s"] = round(seconds, 2)
    finally:
        ray.shutdown()
    row["speedup_2_over_1"] = round(row["ray1_s"] / row["ray2_s"], 2)
    row["ray2_vs_local"] = round(base_s / row["ray2_s"], 2)
    row["load_1min_before"] = round(load[0], 2)
    row["load_1min_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(row), flush=True)
    (OUT / f"results-{'real' if args.real else 'generated'}.json").write_text(json.dumps(row, indent=1))


if __name__ == "__main__":
    main()
