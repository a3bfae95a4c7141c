"""1 vs 2 Ray worker nodes on the row stages and ingest, with the time split into fixed and per-row parts.

The scale suite (``benchmarks/scale_suite.py``) times each asset as a user sees it: one
``dg.materialize`` per stage, the actor pool's start included, on a corpus where the filters leave
238 documents. This benchmark asks *where* the time goes, on enough work per stage:

- the input: the real corpus (:mod:`benchmarks.real_corpus`) repeated ``--copies`` times (ids
  suffixed; the row stages here decide each row alone, so a copy costs what the original does) plus
  ``--generated`` documents of the generated corpus (:mod:`benchmarks.corpus`), written as
  ``raw_documents`` in row groups of ``--group-rows``;
- the stages the ray engine splits over its workers, each fed its real upstream: clean_documents
  (the raw documents), heuristic_filtered (clean_documents' output), and ingest (the same documents
  as JSONL files in the inbox, one task per file or byte range); with ``--stages`` also
  perplexity_scored (the same documents as its upstream; the reference model trained once on the
  bundled reference sample; a first pass on the workers, the cut from merged sketches, a second),
  multilingual_filtered (clean_documents' output: the rows not in a main language, each filtered by
  its language's rules; clean_documents is run once, untimed, when not measured) and pretrain_corpus
  (the same documents as its upstream, published as they are: read, split and written);
- engines: the local engine (in this process: the baseline), then the ray engine on a loopback
  cluster of **1 node x 1 CPU** and of **2 nodes x 1 CPU** (``ray start`` per node, each its own
  process tree; one worker per cluster CPU), every run repeated ``--repeats`` times (median), the
  first run on a fresh cluster reported apart (it starts Ray's worker processes);
- per run, from the engine's own timings (:func:`refinery.engine.ray_engine.slice_timings`): the
  driver's planning, the pool's start-up (Ray Data's executor, the actor processes, imports, the
  processor built per actor), the **work span** (first slice's start to the last one's end), the
  drain and the commit; the slices' CPU seconds; each worker's busy seconds (an uneven tail shows);
  and the machine's busy cores over the run from ``/proc/stat`` (this process, Ray and every other
  job on the machine: the contention the run had).

Every ray run's output is checked equal to the local engine's (rows, order, reasons).

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_ray_scaling --copies 3

Writes ``benchmarks/out/ray_scaling.md`` and ``.json`` and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pandas as pd  # noqa: E402

from refinery import names  # noqa: E402

OUT = ROOT / "benchmarks" / "out"
DISPATCH = ("tasks", "actors", "ray-data")


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def machine_busy() -> tuple[float, float]:
    """(busy, total) CPU jiffies of the whole machine so far (every process, ours and others')."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def _spin(seconds: float, out) -> None:
    """Pure-Python work for ``seconds`` of wall time (a tokenizer-like loop): its count goes to ``out``."""
    words = ("the quick brown fox jumps over the lazy dog " * 50).split()
    done, end = 0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        counts: dict[str, int] = {}
        for w in words:
            counts[w] = counts.get(w, 0) + 1
        done += 1
    out.put(done)


def machine_ceiling(seconds: float = 3.0, repeats: int = 3) -> dict:
    """What two busy processes get on this machine against one: the most any 2-worker run can gain
    here (1.0 per process on two free cores; less when the cores are shared, hyperthreads or busy)."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    ratios = []
    for _ in range(repeats):
        counts = []
        for n in (1, 2):
            queue = ctx.Queue()
            procs = [ctx.Process(target=_spin, args=(seconds, queue)) for _ in range(n)]
            for proc in procs:
                proc.start()
            counts.append(sum(queue.get() for _ in procs))
            for proc in procs:
                proc.join()
        ratios.append(counts[1] / counts[0])
    return {"two_over_one": round(statistics.median(ratios), 3), "runs": [round(r, 3) for r in ratios]}


def load_documents(args) -> pd.DataFrame:
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(max_mb=args.real_mb, log=lambda *_: None)
    real = pd.concat([pd.read_parquet(f, columns=["id", "text"]) for f in corpus.files], ignore_index=True)
    frames = [real.assign(id=real["id"].astype(str) + f"-c{c}") for c in range(args.copies)]
    if args.generated:
        from benchmarks.corpus import generate_shard

        frames.append(generate_shard(7, 0, 0, args.generated).to_pandas()[["id", "text"]])
    frame = pd.concat(frames, ignore_index=True)
    if args.max_docs:
        frame = frame.iloc[: args.max_docs]
    frame["id"] = frame["id"].astype(str)
    return frame.assign(source="bench", url=None, meta=None, file="f", line=1)


def write_raw(storage, frame: pd.DataFrame, group_rows: int, asset: str = names.RAW_DOCUMENTS) -> None:
    from refinery.schema import DOCUMENT_SCHEMA

    with storage.writer(asset, "bench", DOCUMENT_SCHEMA, DOCUMENT_SCHEMA, {}) as writer:
        for start in range(0, len(frame), group_rows):
            writer.write(frame.iloc[start : start + group_rows], None)


def write_inbox(folder: Path, frame: pd.DataFrame, files: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        part = frame.iloc[i::files]
        with (folder / f"part-{i:02d}.jsonl").open("w", encoding="utf-8") as out:
            for doc_id, text in zip(part["id"], part["text"], strict=True):
                out.write(json.dumps({"id": doc_id, "text": text}) + "\n")


CLAIM_SECONDS: list[float] = []  # the claims step's seconds (exact/fuzzy on Ray: in the driver), per call


def _timed_claims(claim_parts):
    """``claim_parts`` timed: on a distributed engine exact and fuzzy dedup claim every key in the
    step's process, between the workers' key map and their write map (refinery.dedup.claim_plan)."""

    def timed(*args, **kwargs):
        started = time.perf_counter()
        try:
            return claim_parts(*args, **kwargs)
        finally:
            CLAIM_SECONDS.append(time.perf_counter() - started)

    timed.timed = True  # type: ignore[attr-defined]
    return timed


def stage_runner(storage, layout, stage: str, main_languages: tuple[str, ...] = ("en",), index=None):
    """A function (engine) -> (seconds, timings, kept, rejected) running ``stage`` on 'bench'.
    ``main_languages``: the language routing's main languages (the asset's default: English).
    ``index``: (backend, redis URL, a function emptying the index) for exact and fuzzy dedup; every
    run starts from an empty index (an index holding the last run's claims would remove every row)."""
    from refinery.batch import keep_all
    from refinery.clean.cleaning import Cleaner
    from refinery.filters.language_routing import LanguageFilter, LanguageRouting
    from refinery.kernel.spec import StageContext
    from refinery.stages import text

    routing = LanguageRouting(languages=list(main_languages))
    specs = {
        names.CLEAN_DOCUMENTS: (
            text.CLEAN_DOCUMENTS,
            lambda run: Cleaner(run.params, run.params.language_id()),
        ),
        # As the asset runs it: the main languages' side of the language routing.
        names.HEURISTIC_FILTERED: (
            text.HEURISTIC_FILTERED,
            lambda run: LanguageFilter(routing, run.params, main=True),
        ),
        # The other side of the routing: every row not in a main language (clean_documents' labels).
        names.MULTILINGUAL_FILTERED: (
            text.MULTILINGUAL_FILTERED,
            lambda run: LanguageFilter(routing, run.params, main=False),
        ),
        # The final corpus: its upstream's rows published as they are (a copy: read, split, write).
        names.PRETRAIN_CORPUS: (text.PRETRAIN_CORPUS, lambda run: keep_all),
    }
    resources = None
    if stage in (names.EXACT_DEDUPLICATED, names.FUZZY_DEDUPLICATED):  # the assets' makers and index
        from assets import text_stages

        if not getattr(text_stages.claim_parts, "timed", False):
            text_stages.claim_parts = _timed_claims(text_stages.claim_parts)
        if stage == names.EXACT_DEDUPLICATED:
            specs[stage] = (text.EXACT_DEDUPLICATED, text_stages._exact)
        else:
            specs[stage] = (text.FUZZY_DEDUPLICATED, text_stages._fuzzy)
    if stage == names.PERPLEXITY_SCORED:  # the asset's own maker: a first pass on the workers, then the cut
        from assets.text_stages import _perplexity
        from refinery.kernel.spec import StageResources

        specs[stage] = (text.PERPLEXITY_SCORED, _perplexity)
        resources = StageResources({"kenlm": reference_model(layout).plain()})
    spec, make = specs[stage]

    def run(engine):
        nonlocal resources
        if stage in (names.EXACT_DEDUPLICATED, names.FUZZY_DEDUPLICATED):
            from refinery.dedup.backends import DedupIndexes
            from refinery.kernel.spec import StageResources

            backend, url, empty = index
            empty()
            resources = StageResources({"dedup_index": DedupIndexes(backend, url, "bench")})
            CLAIM_SECONDS.clear()
        params = spec.params() if spec.params else None  # pretrain_corpus has none
        ctx = StageContext(spec=spec, source="bench", params=params, layout=layout, storage=storage,
                           engine=engine, provenance={"asset": spec.name},
                           **({"resources": resources} if resources else {}))  # fmt: skip
        started = time.perf_counter()
        stage_run, _ = engine.run(ctx, make)
        seconds = time.perf_counter() - started
        timings = dict(stage_run.extra.get("engine", {}).get("timings", {}))
        if CLAIM_SECONDS:
            timings["claims_s"] = round(sum(CLAIM_SECONDS), 3)
        return seconds, timings, storage.read(stage, "bench"), storage.read(stage, "bench", rejected=True)

    return run


def reference_model(layout):
    """The reference n-gram model perplexity_scored loads, trained once on the bundled reference
    sample (as the reference_lm asset does), and the kenlm resource that finds it."""
    from refinery.quality.reference import ReferenceLMParams, train_reference_lm
    from refinery.sample.reference_sample import build_reference_sample
    from resources.kenlm import KenLMResource

    kenlm = KenLMResource()
    if not (layout.home / "models" / names.REFERENCE_LM).exists():
        build_reference_sample(layout.inbox_kind("reference"))
        train_reference_lm(layout, ReferenceLMParams(), kenlm.order)
    return kenlm


MODEL_STAGES = (names.QUALITY_SCORED, names.DOCUMENT_EMBEDDINGS)
# --ingest: "tasks" is this code's split; "files" never cuts a file finer; "ranges8": 8 per worker.
INGEST_SPLITS = {"files": 0, "ranges8": 8}
DEFAULT_PIECES = None  # set in main(): refinery.kernel.ingest_tasks.PIECES_PER_WORKER as imported
# document_embeddings reads the documents from here: its own upstream (quality_scored) is rewritten
# with quality_scored's kept rows when that stage is measured before it.
EMBEDDINGS_INPUT = "bench_embeddings_input"


def quality_model(layout, storage):
    """The quality classifier quality_scored loads, trained once (as the quality_classifier asset
    does: the reference sample against the raw documents), and the resource that finds it."""
    from refinery.quality.classifier import ClassifierTrainParams, train_quality_classifier
    from resources.quality import QualityClassifierResource

    if not (layout.home / "models" / names.QUALITY_CLASSIFIER).exists():
        from refinery.sample.reference_sample import build_reference_sample

        if not layout.inbox_kind("reference").exists():
            build_reference_sample(layout.inbox_kind("reference"))
        train_quality_classifier(layout, storage, ClassifierTrainParams())
    return QualityClassifierResource()


def model_runner(storage, layout, stage: str):
    """A function (engine) -> (seconds, timings, kept, rejected) for a model stage: on the local
    engine its in-process path, on Ray its pooled path with as many model copies as cluster CPUs
    (``compute.ray_actors``), as a user scaling out sets it."""
    from refinery.engine.model_stages import run_pooled_stage
    from refinery.kernel.spec import StageContext, StageResources
    from refinery.stages import text
    from resources.compute import ComputeResource

    if stage == names.QUALITY_SCORED:
        from assets.text_stages import _quality, _quality_pool

        quality = quality_model(layout, storage).plain()
    else:
        from refinery.quality.embeddings import EmbeddingParams, write_embeddings, write_embeddings_pooled
        from resources import EmbedderResource

        embedder = EmbedderResource(compute=ComputeResource(device="cpu"))

    def run(engine):
        started = time.perf_counter()
        actors = engine.pool_size() if engine.distributed else 1
        compute = ComputeResource(device="cpu", ray_actors=actors)
        if stage == names.DOCUMENT_EMBEDDINGS:
            upstream, params = EMBEDDINGS_INPUT, EmbeddingParams()
            stamp = {"asset": stage}
            if engine.distributed:
                write_embeddings_pooled(storage, upstream, "bench", embedder.plain().load, stamp, params,
                                        engine, compute.model_pool())  # fmt: skip
            else:
                write_embeddings(storage, upstream, "bench", embedder.load(), stamp, params)
            seconds = time.perf_counter() - started
            return seconds, {}, storage.read(stage, "bench"), pd.DataFrame()
        spec = text.QUALITY_SCORED
        resources = StageResources({"quality_model": quality, "compute": compute.plain()})
        params = spec.params() if spec.params else None  # pretrain_corpus has none
        ctx = StageContext(spec=spec, source="bench", params=params, layout=layout, storage=storage,
                           engine=engine, provenance={"asset": spec.name}, resources=resources)  # fmt: skip
        if engine.distributed:
            run_pooled_stage(ctx, _quality_pool(ctx))
        else:
            engine.run(ctx, _quality)
        seconds = time.perf_counter() - started
        return seconds, {}, storage.read(stage, "bench"), storage.read(stage, "bench", rejected=True)

    return run


def ingest_runner(storage, layout, split_bytes: int):
    from refinery.engine.tasks import InProcessTasks
    from refinery.ingest.text_reader import IngestParams, SourceReader
    from refinery.kernel.ingest import ingest_with_reader
    from refinery.kernel.ingest_tasks import ingest_in_tasks

    folder = layout.inbox_source("text", "bench")
    params = IngestParams(split_bytes=split_bytes)

    def run(engine):
        reader = SourceReader(folder, "bench", params)
        started = time.perf_counter()
        if engine is None:
            ingest_with_reader(reader, storage, names.RAW_DOCUMENTS, {"asset": names.RAW_DOCUMENTS})
            timings = {}
        else:
            runner, workers = engine.tasks() if engine != "inprocess" else (InProcessTasks(), 1)
            stage_run = ingest_in_tasks(reader, storage, names.RAW_DOCUMENTS, {"asset": names.RAW_DOCUMENTS},
                                        runner, workers, split_bytes, params)  # fmt: skip
            timings = dict(stage_run.extra["engine"])
        seconds = time.perf_counter() - started
        steps = getattr(runner, "steps", None) if engine is not None else None
        if steps:  # the maps' start-up, work and drain summed; the rest is the driver's own work
            mapped = {
                k: sum(s.get(k, 0) for s in steps) for k in ("startup_s", "work_s", "drain_s", "task_cpu_s")
            }
            in_maps = mapped["startup_s"] + mapped["work_s"] + mapped["drain_s"]
            timings.update(mapped, slice_cpu_s=mapped["task_cpu_s"], steps=steps, finish_s=seconds - in_maps)
        return (
            seconds,
            timings,
            storage.read(names.RAW_DOCUMENTS, "bench"),
            storage.read(names.RAW_DOCUMENTS, "bench", rejected=True),
        )

    return run


def measure(run, engine, repeats: int, want) -> dict:
    """``repeats`` runs (the first kept apart as 'first'), each with the machine's busy cores."""
    runs = []
    for _ in range(repeats + 1):
        busy0, total0 = machine_busy()
        cpu0 = time.process_time()
        seconds, timings, kept, rejected = run(engine)
        busy1, total1 = machine_busy()
        cores = os.cpu_count() or 1
        equal = True
        if want is not None:
            equal = same_rows(kept, want[0]) and same_rows(rejected, want[1])
        runs.append({
            "seconds": seconds,
            "timings": timings,
            "driver_cpu_s": time.process_time() - cpu0,
            "machine_busy_cores": cores * (busy1 - busy0) / max(1.0, total1 - total0),
            "equal": bool(equal),
            "rows": len(kept),
        })  # fmt: skip
        print(f"    {seconds:7.2f} s  {json.dumps(timings)[:300]}", flush=True)
    return {"first": runs[0], "runs": runs[1:], "outputs": (kept, rejected)}


def same_rows(got: pd.DataFrame, want: pd.DataFrame) -> bool:
    """Equal frames: rows, order, every value; vectors (document_embeddings) within 1e-5, since
    a model's batches are cut differently on a pool than in one process."""
    got, want = got.reset_index(drop=True), want.reset_index(drop=True)
    if got.equals(want):
        return True
    if list(got.columns) != list(want.columns) or len(got) != len(want):
        return False
    import numpy as np

    for column in got.columns:
        a, b = got[column], want[column]
        if a.equals(b):
            continue
        if a.dtype != object or not len(a) or not hasattr(a.iloc[0], "__len__") or isinstance(a.iloc[0], str):
            return False
        if not np.allclose(np.stack(a.to_numpy()), np.stack(b.to_numpy()), atol=1e-5):
            return False
    return True


def median(values) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def summarize(m: dict) -> dict:
    runs = m["runs"]
    t = [r["timings"] for r in runs]
    return {
        "seconds": median(r["seconds"] for r in runs),
        "seconds_all": [round(r["seconds"], 2) for r in runs],
        "first_s": m["first"]["seconds"],
        "startup_s": median(x.get("startup_s") for x in t),
        "work_s": median(x.get("work_s") for x in t),
        "plan_s": median(x.get("plan_s") for x in t),
        "drain_s": median(x.get("drain_s") for x in t),
        "finish_s": median(x.get("finish_s") for x in t),
        # What the driver did outside the slices' map: its own processor built (make), the stats written.
        "driver_other_s": median(
            r["seconds"] - sum(r["timings"].get(k, 0) for k in ("plan_s", "map_s", "finish_s"))
            for r in runs
            if "map_s" in r["timings"]
        ),
        "slice_cpu_s": median(x.get("slice_cpu_s") for x in t),
        "claims_s": median(x.get("claims_s") for x in t),
        "slice_s": median(x.get("slice_s") for x in t),
        "busy_s": t[len(t) // 2].get("busy_s"),
        "init_s": t[len(t) // 2].get("init_s"),
        "driver_cpu_s": median(r["driver_cpu_s"] for r in runs),
        "machine_busy_cores": median(r["machine_busy_cores"] for r in runs),
        "equal": all(r["equal"] for r in [m["first"], *runs]),
        "rows": runs[0]["rows"],
        "tasks": t[0].get("tasks"),
        # the median run's maps (ingest): where its span went, step by step
        "steps": sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]["timings"].get("steps"),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-mb", type=float, default=48)
    p.add_argument("--copies", type=int, default=3, help="times the real corpus is repeated")
    p.add_argument("--generated", type=int, default=0, help="generated documents added")
    p.add_argument("--max-docs", type=int, default=0, help="keep only the first N documents (0: all)")
    p.add_argument("--group-rows", type=int, default=100)
    p.add_argument("--slices", type=int, default=32, help="slices per partition (slice_rows = docs / slices)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--files", type=int, default=8, help="JSONL files in the inbox for ingest")
    p.add_argument("--split-mb", type=float, default=256, help="ingest's split_bytes, in MB")
    p.add_argument("--stages", default="ingest,clean_documents,heuristic_filtered")
    p.add_argument("--ingest", default="tasks", help="tasks (this code's split), files or ranges8")
    p.add_argument("--dispatch", default="tasks,actors", help=f"the ray engine's dispatch, of {DISPATCH}")
    p.add_argument(
        "--index",
        default="local",
        choices=("local", "redis-cluster"),
        help="exact/fuzzy dedup's index: SQLite in the home, or a Redis Cluster of --redis-nodes on loopback",
    )
    p.add_argument("--redis-nodes", type=int, default=3)
    p.add_argument(
        "--main-languages",
        default="en",
        help="the routing's main languages (comma-separated); 'de' puts this corpus's English rows on "
        "multilingual_filtered's side, so that stage filters every row as heuristic_filtered does",
    )
    p.add_argument("--ceiling-only", action="store_true", help="only 2 busy processes against 1")
    p.add_argument("--s3", action="store_true", help="the storage root on moto's S3 (row stages only)")
    p.add_argument("--out", type=Path, default=OUT / "ray_scaling.md")
    args = p.parse_args()
    for k, v in {"RAY_AUTH_MODE": "disabled", "RAY_DISABLE_USAGE_STATS": "1", "OMP_NUM_THREADS": "1",
                 "RAYON_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}.items():  # fmt: skip
        os.environ.setdefault(k, v)
    import ray

    from benchmarks.bench_driver_memory import loopback_cluster
    from refinery.engine.local import LocalEngine
    from refinery.engine.ray_engine import RayEngine
    from refinery.paths import Layout
    from refinery.storage import Storage

    global DEFAULT_PIECES
    from refinery.kernel import ingest_tasks

    DEFAULT_PIECES = ingest_tasks.PIECES_PER_WORKER
    load_before, date = uptime(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    if args.ceiling_only:
        print(
            json.dumps(
                {"date": date, "load_before": load_before, **machine_ceiling(), "load_after": uptime()}
            )
        )
        return
    ceiling = machine_ceiling()
    print(f"2 busy processes over 1 on this machine: {ceiling}", flush=True)
    frame = load_documents(args)
    mb = frame["text"].str.encode("utf-8").str.len().sum() / 1e6
    tmp = Path(tempfile.mkdtemp(prefix="ray-scaling-"))
    layout = Layout.at(tmp / "home")
    if args.s3:  # the row stages over an s3:// root: moto on loopback (benchmarks/s3_loopback.py)
        import atexit
        import contextlib

        from benchmarks.s3_loopback import moto_root
        from refinery.object_storage import ObjectStorage

        server = contextlib.ExitStack()
        atexit.register(server.close)
        storage = ObjectStorage(server.enter_context(moto_root()))
    else:
        storage = Storage(layout.storage)
    write_raw(storage, frame, args.group_rows)
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    # The scoring stages' upstreams: the same documents (each row is scored alone).
    upstreams = {names.PERPLEXITY_SCORED: names.FUZZY_DEDUPLICATED,
                 names.QUALITY_SCORED: names.PERPLEXITY_SCORED,
                 names.PRETRAIN_CORPUS: names.SEMANTIC_DEDUPLICATED,
                 names.EXACT_DEDUPLICATED: names.HEURISTIC_FILTERED,
                 names.FUZZY_DEDUPLICATED: names.EXACT_DEDUPLICATED,
                 names.DOCUMENT_EMBEDDINGS: EMBEDDINGS_INPUT}  # fmt: skip
    for stage in stages:
        if stage in upstreams:
            write_raw(storage, frame, args.group_rows, upstreams[stage])
    if names.QUALITY_SCORED in stages and names.CLEAN_DOCUMENTS not in stages:  # the classifier's raw class
        write_raw(storage, frame, args.group_rows, names.CLEAN_DOCUMENTS)
    main_languages = tuple(x.strip() for x in args.main_languages.split(",") if x.strip())
    index = None
    if names.EXACT_DEDUPLICATED in stages or names.FUZZY_DEDUPLICATED in stages:
        import atexit
        import shutil

        if args.index == "redis-cluster":  # tests/redis_cluster.py: redis-server nodes on loopback
            from tests.redis_cluster import LocalCluster

            redis_nodes = LocalCluster(tmp / "redis", nodes=args.redis_nodes)
            atexit.register(redis_nodes.stop)
            index = ("redis-cluster", redis_nodes.url, redis_nodes.flush)
        else:
            index = ("local", "", lambda: shutil.rmtree(layout.index, ignore_errors=True))
    routed = {names.HEURISTIC_FILTERED, names.MULTILINGUAL_FILTERED}
    if routed & set(stages) and names.CLEAN_DOCUMENTS not in stages:  # their upstream, with its labels
        print("  clean_documents (the routed stages' input, local engine, not timed)", flush=True)
        stage_runner(storage, layout, names.CLEAN_DOCUMENTS)(LocalEngine())
    if "ingest" in stages:
        write_inbox(layout.inbox_source("text", "bench"), frame[["id", "text"]], args.files)
    slice_rows = max(1, len(frame) // args.slices)
    print(
        f"{len(frame):,} documents, {mb:.1f} MB; slices of {slice_rows} rows; load: {load_before}", flush=True
    )
    results: dict[str, dict[str, dict]] = {s: {} for s in stages}
    wants: dict[str, tuple] = {}
    split = int(args.split_mb * 1e6)

    def runner(stage):
        if stage == "ingest":
            return ingest_runner(storage, layout, split)
        if stage in MODEL_STAGES:
            return model_runner(storage, layout, stage)
        return stage_runner(storage, layout, stage, main_languages, index)

    # The local engine first: its outputs are the reference and each next stage's input.
    for stage in stages:
        print(f"  local {stage}", flush=True)
        m = measure(runner(stage), None if stage == "ingest" else LocalEngine(), args.repeats, None)
        wants[stage] = m.pop("outputs")
        results[stage]["local"] = summarize(m)
    for nodes in (1, 2):
        with loopback_cluster(nodes=nodes) as address:
            try:
                for stage in stages:
                    # Ingest is Ray tasks (refinery.kernel.ingest_tasks): the dispatch is the row stages'.
                    for dispatch in args.dispatch.split(",") if stage != "ingest" else args.ingest.split(","):
                        label = f"ray {nodes} node{'s' if nodes > 1 else ''}, {dispatch}"
                        engine = RayEngine(
                            address=address,
                            node_ip_address="127.0.0.1",
                            slice_rows=slice_rows,
                            dispatch=dispatch if stage != "ingest" else "tasks",
                        )
                        if stage == "ingest":  # "files": no finer ranges; "ranges8": session 6's split
                            from refinery.kernel import ingest_tasks

                            ingest_tasks.PIECES_PER_WORKER = INGEST_SPLITS.get(dispatch, DEFAULT_PIECES)
                        t = time.perf_counter()
                        engine.connect()
                        connect_s = time.perf_counter() - t
                        print(f"  {label} {stage}", flush=True)
                        try:
                            m = measure(runner(stage), engine, args.repeats, wants[stage])
                        except Exception as err:  # reported in the table; the other runs go on
                            print(f"    failed: {type(err).__name__}: {err}", flush=True)
                            results[stage][label] = {"error": f"{type(err).__name__}: {str(err)[:200]}"}
                            continue
                        m.pop("outputs")
                        results[stage][label] = {**summarize(m), "connect_s": connect_s}
            finally:
                ray.shutdown()
    load_after = uptime()
    doc = {"date": date, "documents": len(frame), "text_mb": round(mb, 2), "slice_rows": slice_rows,
           "root": "s3:// (moto on loopback)" if args.s3 else "local folder",
           "args": {k: str(v) for k, v in vars(args).items()}, "load_before": load_before,
           "load_after": load_after, "ceiling": ceiling, "results": results}  # fmt: skip
    text = "\n".join(render(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    print("\n" + text)


def fmt(x, pattern="{:.2f}") -> str:
    return "–" if x is None or x != x else pattern.format(x)


def render(doc: dict) -> list[str]:
    lines = [
        f"{doc['date']}; {doc['documents']:,} documents, {doc['text_mb']} MB; storage root: "
        f"{doc.get('root', 'local folder')}; slices of {doc['slice_rows']} "
        f"rows; median of the repeats after a first run. Load before `{doc['load_before']}`, after "
        f"`{doc['load_after']}`. Two busy processes over one on this machine, same run: "
        f"{doc['ceiling']['two_over_one']:.2f}x (the most a 2-worker run can gain here).",
        "",
        "| stage | engine | wall s (runs) | first run s | driver serial s | pool start-up s | work span s | "
        "drain s | slice CPU s | cores the slices got | busy s per worker | machine busy cores | "
        "2 over 1, wall / work | same |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---|---|",
    ]
    for stage, by_engine in doc["results"].items():
        for label, r in by_engine.items():
            if "error" in r:
                lines.append(f"| {stage} | {label} | **failed**: {r['error']} |" + " |" * 10)
                continue
            ratio = ""
            one = by_engine.get(label.replace("2 nodes", "1 node"))
            if "2 nodes" in label and one and "error" not in one:
                ratio = f"{one['seconds'] / r['seconds']:.2f}x"
                if r.get("work_s") == r.get("work_s") and r.get("work_s"):
                    ratio += f" / {one['work_s'] / r['work_s']:.2f}x"
            # The driver's own serial work: its processor built, the plan, the stats merged and the commit.
            serial = sum(
                v for v in (r.get("plan_s"), r.get("finish_s"), r.get("driver_other_s")) if v == v and v
            )
            claims = r.get("claims_s")  # exact/fuzzy on Ray: the claims (driver), in its serial time
            claims = f" (claims {claims:.2f})" if claims == claims and claims else ""
            lines.append(
                f"| {stage} | {label} | {r['seconds']:.2f} ({', '.join(map(str, r['seconds_all']))}) | "
                f"{r['first_s']:.2f} | {fmt(serial) if 'ray' in label else '–'}{claims} | "
                f"{fmt(r.get('startup_s'))} | "
                f"{fmt(r.get('work_s'))} | {fmt(r.get('drain_s'))} | {fmt(r.get('slice_cpu_s'))} | "
                f"{fmt((r.get('slice_cpu_s') or 0) / r['work_s'] if r.get('work_s') else None)} | "
                f"{r.get('busy_s') or '–'} | {r['machine_busy_cores']:.2f} | {ratio} | "
                f"{'yes' if r['equal'] else '**no**'} |"
            )
    steps = [
        (stage, label, r["steps"])
        for stage, by_engine in doc["results"].items()
        for label, r in by_engine.items()
        if r.get("steps")
    ]
    if steps:
        lines += [
            "",
            "Maps of the median run (tasks; start-up, work span, drain and the tasks' CPU, s):",
            "",
            "| stage | engine | map | tasks | start-up s | work span s | drain s | task CPU s | processes |",
            "|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for stage, label, maps in steps:
            for m in maps:
                lines.append(
                    f"| {stage} | {label} | {m['step']} | {m['tasks']} | {fmt(m.get('startup_s'))} | "
                    f"{fmt(m.get('work_s'))} | {fmt(m.get('drain_s'))} | {fmt(m.get('task_cpu_s'))} | "
                    f"{m.get('processes', '–')} |"
                )
    return lines


if __name__ == "__main__":
    main()
