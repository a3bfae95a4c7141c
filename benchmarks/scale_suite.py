"""The scale figures of issues 18 and 19 in one command, each baseline measured in the same run.

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.scale_suite   # ~8 min, 2 cores
    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.scale_suite --claims-10m   # + 10M claims

Sections (each in a subprocess of its own with a time limit, so one that fails or overruns is reported
as such and the others still run; ``--sections`` picks some):

- ``rows``: every row stage (raw_documents, clean_documents, heuristic_filtered, exact_deduplicated,
  fuzzy_deduplicated, perplexity_scored, quality_scored) and the corpus-wide dedup
  (corpus_fuzzy_dedup), materialized through Dagster (``dg.materialize``, the real assets and
  resources) on real text (:mod:`benchmarks.real_corpus`, one source of several JSONL files), with the
  ``local`` engine, then the ``ray`` engine on a loopback cluster of **1 node × 1 CPU**, then of **2
  nodes × 1 CPU** (``ray start``, each node its own process tree; the engine runs one worker per
  cluster CPU). Wall seconds per stage (Dagster's step overhead and the actor pool's start included,
  as a user sees it); every stage's kept ids are checked equal to the local engine's.
- ``dedup``: the corpus-wide dedup's MB/s per core (CPU seconds of this process, every task in it)
  against datatrove's four MinHash stages on the same documents
  (:mod:`benchmarks.bench_corpus_shuffle`).
- ``driver``: the Dagster process tree's peak RSS against corpus size for corpus_fuzzy_dedup on a
  two-node loopback cluster (:mod:`benchmarks.bench_driver_memory`).
- ``claims``: claims per second on the local index (SQLite) and on a Redis Cluster of 1 and 3 shards,
  the index prefilled in bulk with realistic entries to 1M (and 10M with ``--claims-10m``) documents,
  then a few seconds of real claims from spawn workers (:mod:`benchmarks.bench_claims`); the index's
  bytes per document measured (SQLite file with its WAL; Redis ``used_memory`` over the nodes) and the
  cost at 100M derived from them.

Writes ``benchmarks/out/scale_suite.md`` (what the integrator pastes into RESULTS.md: the date, the
machine, ``uptime`` before and after, every table) and ``scale_suite.json``, and prints the Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

OUT = ROOT / "benchmarks" / "out"
SECTIONS = ("rows", "dedup", "driver", "claims")
# Seconds each section may take (the claims' fills dominate theirs); --budget scales them all.
LIMITS = {"rows": 420, "dedup": 200, "driver": 200, "claims": 300}
LIMITS_10M = 1500  # the claims section with --claims-10m
SINGLE_THREAD = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TORCH_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "RAY_AUTH_MODE": "disabled",
    "RAY_DISABLE_USAGE_STATS": "1",
}


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()
    except OSError:
        return "load " + " ".join(f"{x:.2f}" for x in os.getloadavg())


# --- rows: every row stage and the corpus-wide dedup, local vs Ray 1 vs Ray 2 ------------------------


def _write_inbox(layout, corpus, files: int = 8) -> tuple[int, float]:
    """The real corpus as one source of ``files`` JSONL files (ingest may split by file)."""
    import pandas as pd

    frame = pd.concat([pd.read_parquet(f, columns=["id", "text"]) for f in corpus.files], ignore_index=True)
    folder = layout.inbox_source("text", "bench")
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(files):
        part = frame.iloc[i::files]
        with (folder / f"part-{i:02d}.jsonl").open("w", encoding="utf-8") as out:
            for doc_id, text in zip(part["id"], part["text"], strict=True):
                out.write(json.dumps({"id": str(doc_id), "text": text}) + "\n")
    return len(frame), frame["text"].str.encode("utf-8").str.len().sum() / 1e6


def section_rows(args) -> dict:
    import dagster as dg
    import ray

    from assets import TEXT_MODELS, corpus_fuzzy_dedup
    from assets.factory import STAGE_ASSETS
    from benchmarks.bench_driver_memory import loopback_cluster
    from benchmarks.real_corpus import ensure_real_corpus
    from refinery import names
    from refinery.paths import Layout
    from refinery.sample.reference_sample import build_reference_sample
    from refinery.storage import Storage
    from resources import EngineResource, build_resources

    stages = [names.RAW_DOCUMENTS, names.CLEAN_DOCUMENTS, names.HEURISTIC_FILTERED, names.EXACT_DEDUPLICATED,
              names.FUZZY_DEDUPLICATED, names.PERPLEXITY_SCORED, names.QUALITY_SCORED]  # fmt: skip
    corpus = ensure_real_corpus(max_mb=args.real_mb, log=lambda *_: None)
    tmp = Path(tempfile.mkdtemp(prefix="scale-rows-"))
    layout = Layout.at(tmp / "home")
    docs, mb = _write_inbox(layout, corpus)
    build_reference_sample(layout.inbox_kind("reference"))
    storage = Storage(layout.storage)
    slice_rows = max(50, docs // args.slices)
    no_replay = {"ops": {names.CORPUS_FUZZY_DEDUP: {"config": {"replay_incremental": False}}}}
    runs: list[dict] = []
    want: dict[str, list] = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["bench"])

        def resources(engine):
            return build_resources("local", home=str(layout.home), device="cpu", engine=engine)

        models_s = None
        for label, nodes in (("local", 0), ("ray, 1 node x 1 CPU", 1), ("ray, 2 nodes x 1 CPU", 2)):
            with loopback_cluster(nodes=nodes) if nodes else _nothing() as address:
                engine = (
                    EngineResource(
                        kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=slice_rows
                    )
                    if nodes
                    else EngineResource()
                )
                run = {"engine": label, "seconds": {}, "rows_out": {}, "equal": {}}
                try:
                    for stage in [*stages, names.CORPUS_FUZZY_DEDUP]:
                        if stage == names.PERPLEXITY_SCORED and models_s is None:
                            # The models train on the reference sample and clean_documents: once.
                            t = time.perf_counter()
                            models = dg.materialize(
                                TEXT_MODELS, instance=instance, resources=resources(engine)
                            )
                            if not models.success:
                                raise RuntimeError("the text models failed to materialize")
                            models_s = time.perf_counter() - t
                        asset = (
                            corpus_fuzzy_dedup if stage == names.CORPUS_FUZZY_DEDUP else STAGE_ASSETS[stage]
                        )
                        partition = None if stage == names.CORPUS_FUZZY_DEDUP else "bench"
                        t = time.perf_counter()
                        result = dg.materialize([asset], partition_key=partition, instance=instance,
                                                resources=resources(engine), run_config=no_replay
                                                if stage == names.CORPUS_FUZZY_DEDUP else None)  # fmt: skip
                        run["seconds"][stage] = time.perf_counter() - t
                        if not result.success:
                            raise RuntimeError(f"{stage} failed on {label}")
                        part = partition or names.CORPUS_FUZZY_DEDUP
                        frame = storage.read(stage, part)
                        key = (
                            sorted(frame.loc[~frame["kept"], "id"].astype(str))
                            if stage == names.CORPUS_FUZZY_DEDUP
                            else list(frame["id"].astype(str))
                        )
                        run["rows_out"][stage] = len(frame)
                        want.setdefault(stage, key)
                        run["equal"][stage] = key == want[stage]
                        print(f"  {label:22} {stage:22} {run['seconds'][stage]:7.1f} s", flush=True)
                finally:
                    ray.shutdown()
                runs.append(run)
    return {"documents": docs, "text_mb": round(mb, 2), "slice_rows": slice_rows, "models_s": models_s,
            "runs": runs}  # fmt: skip


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def render_rows(r: dict) -> list[str]:
    runs = {run["engine"]: run for run in r["runs"]}
    local, one, two = (runs.get(k) for k in ("local", "ray, 1 node x 1 CPU", "ray, 2 nodes x 1 CPU"))
    lines = [
        f"Real text: {r['documents']:,} documents, {r['text_mb']} MB, one source in 8 JSONL files; "
        f"slices of {r['slice_rows']} rows. Wall seconds per `dg.materialize` of one asset (Dagster's "
        f"step and the actor pool's start included). Text models trained once beforehand "
        f"({r['models_s']:.0f} s, not counted).",
        "",
        "| stage | rows out | local s | Ray 1 worker s | Ray 2 workers s | 2 over 1 | MB/s, 2 workers | same ids as local |",  # noqa: E501
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for stage in (local or one or two)["seconds"]:
        cells = [(run["seconds"].get(stage) if run else None) for run in (local, one, two)]
        speedup = f"{cells[1] / cells[2]:.2f}x" if cells[1] and cells[2] else "–"
        mbs = f"{r['text_mb'] / cells[2]:.2f}" if cells[2] else "–"
        equal = all(run["equal"].get(stage, False) for run in (one, two) if run)
        rows_out = (local or one)["rows_out"].get(stage, "–")
        fmt = [f"{c:.1f}" if c else "–" for c in cells]
        lines.append(
            f"| {stage} | {rows_out:,} | {' | '.join(fmt)} | {speedup} | {mbs} | {'yes' if equal else '**no**'} |"  # noqa: E501
        )
    if one and two:
        t1, t2 = sum(one["seconds"].values()), sum(two["seconds"].values())
        lines.append(
            f"| **all** | | {sum(local['seconds'].values()) if local else 0:.1f} | {t1:.1f} | {t2:.1f} | {t1 / t2:.2f}x | | |"  # noqa: E501
        )
    return lines


# --- dedup: corpus-wide dedup vs datatrove's four MinHash stages -------------------------------------


def section_dedup(args) -> dict:
    from benchmarks.bench_corpus_shuffle import run_datatrove, run_shuffle
    from benchmarks.real_corpus import ensure_real_corpus
    from refinery.engine.tasks import InProcessTasks

    corpus = ensure_real_corpus(max_mb=args.real_mb, log=lambda *_: None)
    files = [(f"s{i:03d}", f) for i, f in enumerate(corpus.files)]
    import pyarrow.parquet as pq

    docs = text_bytes = 0
    for _, f in files:
        texts = pq.read_table(f, columns=["text"]).column("text").to_pylist()
        docs += len(texts)
        text_bytes += sum(len(t.encode()) for t in texts)
    mb = text_bytes / 1e6
    with tempfile.TemporaryDirectory(prefix="scale-dedup-") as tmp:
        ours_cpu, ours_wall, stats = run_shuffle(files, InProcessTasks(), 1, Path(tmp) / "work", 20_000)
        dt_cpu, dt_wall, dt = run_datatrove(files, Path(tmp))
    write_dedup_rate(mb / ours_cpu, docs, mb)
    return {
        "documents": docs,
        "text_mb": round(mb, 2),
        "runs": [
            {
                "method": "corpus_fuzzy_dedup shuffle (every task in this process)",
                "cpu_s": ours_cpu,
                "wall_s": ours_wall,
                "removed": int(stats["removed"]),
            },
            {
                "method": "datatrove: signatures, buckets, cluster, filter",
                "cpu_s": dt_cpu,
                "wall_s": dt_wall,
                "removed": docs - dt["kept"],
                "stages": dt["cpu_seconds"],
            },
        ],
    }


def write_dedup_rate(mb_s_per_core: float, docs: int, mb: float) -> None:
    """The measured rate where ``refinery plan`` reads it (``benchmarks/rates/corpus_shuffle.json``,
    the key :mod:`benchmarks.bench_corpus_shuffle` writes too)."""
    path = ROOT / "benchmarks" / "rates" / "corpus_shuffle.json"
    rates = json.loads(path.read_text()) if path.exists() else {}
    rates["corpus_fuzzy_dedup"] = {
        "mb_s_per_core": round(mb_s_per_core, 2),
        "corpus": "real",
        "documents": docs,
        "text_mb": round(mb, 2),
        "source": "benchmarks/scale_suite.py dedup (shuffle, in process; CPU seconds)",
        "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    path.write_text(json.dumps(rates, indent=1, sort_keys=True) + "\n")


def render_dedup(r: dict) -> list[str]:
    lines = [
        f"Real text: {r['documents']:,} documents, {r['text_mb']} MB; 5-word shingles, 128 permutations in "
        "13 bands (datatrove: 13 buckets x 8 hashes); CPU seconds of the one process.",
        "",
        "| method | CPU s | MB/s per core | removed |",
        "|---|---:|---:|---:|",
    ]
    for run in r["runs"]:
        lines.append(
            f"| {run['method']} | {run['cpu_s']:.1f} | {r['text_mb'] / run['cpu_s']:.2f} | {run['removed']:,} |"  # noqa: E501
        )
    ours, theirs = r["runs"]
    lines.append("")
    lines.append(f"Ours over datatrove, per core: **{theirs['cpu_s'] / ours['cpu_s']:.2f}x** "
                 f"(datatrove's stages, CPU s: {', '.join(f'{k} {v:.1f}' for k, v in theirs['stages'].items())}).")  # fmt: skip  # noqa: E501
    return lines


# --- driver: the Dagster process tree's peak RSS against corpus size ---------------------------------


def section_driver(args) -> dict:
    from benchmarks.bench_driver_memory import loopback_engine
    from refinery.paths import Layout
    from tests.ray.driver_memory import materialize_measured, write_corpus

    rows = []
    with loopback_engine(10_000) as engine, tempfile.TemporaryDirectory(prefix="scale-driver-") as tmp:
        for docs in args.driver_docs:
            home = Layout.at(Path(tmp) / str(docs))
            write_corpus(home, docs)
            t = time.perf_counter()
            rc, peak, out = materialize_measured(home, engine, ROOT)
            if rc:
                raise RuntimeError(f"corpus_fuzzy_dedup at {docs} documents failed:\n{out[-2000:]}")
            rows.append({"docs": docs, "peak_mb": peak / 2**20, "seconds": time.perf_counter() - t})
            print(f"  driver {docs:>9,} docs {rows[-1]['peak_mb']:7.0f} MB", flush=True)
    return {"rows": rows}


def render_driver(r: dict) -> list[str]:
    lines = [
        "corpus_fuzzy_dedup through the Dagster CLI on a two-node loopback Ray cluster (1 CPU per node), "
        "generated short documents; peak RSS of the CLI's whole process tree (Ray's workers excluded).",
        "",
        "| documents | Dagster tree peak RSS (MB) | ratio to the smallest | wall s |",
        "|---:|---:|---:|---:|",
    ]
    first = r["rows"][0]["peak_mb"]
    for row in r["rows"]:
        lines.append(
            f"| {row['docs']:,} | {row['peak_mb']:.0f} | {row['peak_mb'] / first:.2f}x | {row['seconds']:.0f} |"  # noqa: E501
        )
    return lines


# --- claims: local / Redis Cluster 1 and 3 shards at 1M (10M) indexed documents ----------------------


def section_claims(args) -> dict:
    from benchmarks.bench_claims import CONFIGS, run_one

    opts = argparse.Namespace(workers=args.claims_workers, seconds=args.claims_seconds, batch=500)
    plan = [("exact", n) for n in args.claims_exact_sizes] + [("fuzzy", n) for n in args.claims_fuzzy_sizes]
    if args.claims_10m:  # the fills take minutes: the exact index at 10M, the fuzzy one at 1M
        plan += [("exact", 10_000_000), ("fuzzy", 1_000_000)]
    rows = []
    for kind, n in plan:
        for name in args.claims_configs:
            backend, shards = CONFIGS[name]
            row = run_one(backend, shards, kind, n, opts)
            rows.append(row)
            print(f"  claims {kind:5} N={n:>10,} {row['backend']:18} {row['claims_per_s']:>9,.0f}/s "
                  f"{row['bytes_per_doc']:6.0f} B/doc (fill {row['fill_s']:.0f} s)", flush=True)  # fmt: skip
    return {"rows": rows, "workers": args.claims_workers, "seconds": args.claims_seconds}


def render_claims(r: dict) -> list[str]:
    lines = [
        f"{r['workers']} spawn workers (one partition each) claim fresh documents through the real claim path "  # noqa: E501
        f"for {r['seconds']:g} s (batches of 500; a third of the fuzzy ones near-duplicates of indexed "
        "documents) after the index was prefilled in bulk. Bytes per document measured on the index "
        "(SQLite file + WAL; Redis used_memory over every node, minus the empty cluster's).",
        "",
        "| kind | indexed | backend | claims/s | µs per claim per worker | claims measured | index bytes/doc | fill s |",  # noqa: E501
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row in r["rows"]:
        lines.append(
            f"| {row['kind']} | {row['indexed']:,} | {row['backend']} | {row['claims_per_s']:,.0f} | "
            f"{row['us_per_claim_per_worker']:,.0f} | {row['claimed']:,} | {row['bytes_per_doc']:,.0f} | {row['fill_s']:.0f} |"  # noqa: E501
        )
    lines += ["", "Derived at 100M indexed documents (bytes/doc measured at the largest size run × 100M; the "
              "claim cost at the largest size run, which a hash-table index keeps flat while it fits in "
              "memory and SQLite's B-tree grows by one level per ~100x):", "",
              "| kind | backend | measured at | index at 100M | 250M claims (1 TB of 4 KB docs) at the measured rate |",  # noqa: E501
              "|---|---|---:|---:|---:|"]  # fmt: skip
    largest: dict[tuple, dict] = {}
    for row in r["rows"]:
        key = (row["kind"], row["backend"])
        if key not in largest or row["indexed"] > largest[key]["indexed"]:
            largest[key] = row
    for (kind, backend), row in largest.items():
        gb = row["bytes_per_doc"] * 1e8 / 1e9
        hours = 250e6 / row["claims_per_s"] / 3600
        lines.append(f"| {kind} | {backend} | {row['indexed']:,} | {gb:,.0f} GB | {hours:,.1f} h |")
    return lines


RUNNERS = {"rows": section_rows, "dedup": section_dedup, "driver": section_driver, "claims": section_claims}
RENDER = {"rows": render_rows, "dedup": render_dedup, "driver": render_driver, "claims": render_claims}
TITLES = {
    "rows": "Every row stage and the corpus-wide dedup, local vs 1 vs 2 Ray workers (issue 18)",
    "dedup": "Corpus-wide dedup vs datatrove's four MinHash stages, MB/s per core (issue 18)",
    "driver": "Driver peak RSS against corpus size, corpus-wide dedup (issue 18)",
    "claims": "Claims per second and index bytes per document, local / Redis Cluster 1 and 3 shards (issue 19)",  # noqa: E501
}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {SECTIONS}")
    p.add_argument(
        "--real-mb", type=float, default=48, help="size of the real corpus (benchmarks/real_corpus.py)"
    )
    p.add_argument("--slices", type=int, default=16, help="slices per partition on the Ray engine")
    p.add_argument("--driver-docs", type=int, nargs="+", default=[50_000, 200_000])
    p.add_argument("--claims-exact-sizes", type=int, nargs="*", default=[1_000_000])
    # The fuzzy fill writes 13 bucket sets per document (~200 s per million on 2 cores): 200k by default.
    p.add_argument("--claims-fuzzy-sizes", type=int, nargs="*", default=[200_000])
    p.add_argument("--claims-configs", nargs="+", default=["local", "cluster1", "cluster3"])
    p.add_argument("--claims-workers", type=int, default=2)
    p.add_argument("--claims-seconds", type=float, default=4.0)
    p.add_argument(
        "--claims-10m",
        action="store_true",
        help="also the exact index at 10M and the fuzzy one at 1M (~15 min more)",
    )
    p.add_argument("--budget", type=float, default=1.0, help="scale every section's time limit")
    p.add_argument("--out", type=Path, default=OUT / "scale_suite.md")
    p.add_argument("--section", help=argparse.SUPPRESS)  # internal: run one section, JSON to --json
    p.add_argument("--json", type=Path, help=argparse.SUPPRESS)
    return p


def run_section(name: str, argv: list[str], limit: float) -> dict:
    """One section in a subprocess (its Ray, Redis and memory are its own), within ``limit`` seconds;
    its output (Dagster's and Ray's logs, progress lines) goes to ``out/scale_suite-<name>.log``."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        target = Path(f.name)
    env = {**os.environ, **SINGLE_THREAD, "PYTHONPATH": str(ROOT)}
    log = OUT / f"scale_suite-{name}.log"
    started = time.perf_counter()
    try:
        with log.open("w") as out:
            proc = subprocess.run(
                [sys.executable, "-m", "benchmarks.scale_suite", *argv, "--section", name, "--json", str(target)],  # noqa: E501
                cwd=ROOT, env=env, timeout=limit, start_new_session=True, check=False, stdout=out,
                stderr=subprocess.STDOUT,
            )  # fmt: skip
        if proc.returncode:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
            print(tail, flush=True)
            return {
                "error": f"exit code {proc.returncode} ({log.name})",
                "wall_s": time.perf_counter() - started,
            }
        result = json.loads(target.read_text())
    except subprocess.TimeoutExpired:
        return {"error": f"over its limit of {limit:.0f} s: stopped ({log.name})", "wall_s": limit}
    finally:
        target.unlink(missing_ok=True)
    result["wall_s"] = time.perf_counter() - started
    return result


def main() -> None:
    args = parser().parse_args()
    if args.section:  # a child: run one section, write its JSON
        result = RUNNERS[args.section](args)
        args.json.write_text(json.dumps(result, indent=1, default=float))
        return
    argv = sys.argv[1:]
    OUT.mkdir(parents=True, exist_ok=True)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    load_before, date = uptime(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()  # fmt: skip
    if {"rows", "dedup"} & set(chosen):  # built once (minutes: groff renders the man pages), then reused
        from benchmarks.real_corpus import ensure_real_corpus

        print(f"== the real corpus, {args.real_mb:g} MB (benchmarks/real_corpus.py)", flush=True)
        ensure_real_corpus(max_mb=args.real_mb, log=lambda *_: None)
    results, started = {}, time.perf_counter()
    for name in chosen:
        limit = (LIMITS_10M if name == "claims" and args.claims_10m else LIMITS[name]) * args.budget
        print(f"== {name} (limit {limit:.0f} s)", flush=True)
        results[name] = run_section(name, argv, limit)
        print(f"   {results[name].get('error', 'done')} in {results[name]['wall_s']:.0f} s", flush=True)
        results[name]["load_after"] = uptime()
    total = time.perf_counter() - started
    lines = [
        f"### Scale suite (`python -m benchmarks.scale_suite {' '.join(argv)}`), {date}",
        "",
        f"Commit {commit}; {os.cpu_count()} cores, {platform.python_version()}; {total / 60:.1f} min in all.",
        f"Load before: `{load_before}`. After the last section: `{uptime()}`.",
        "",
    ]
    for name in chosen:
        r = results[name]
        lines += [f"#### {TITLES[name]}", ""]
        if "error" in r:
            lines += [f"**Not measured**: {r['error']}.", ""]
        else:
            lines += [*RENDER[name](r), ""]
        lines += [f"_{r['wall_s']:.0f} s; load after: `{r['load_after']}`_", ""]
    text = "\n".join(lines)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=float))
    print("\n" + text)


if __name__ == "__main__":
    main()
