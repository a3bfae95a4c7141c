"""The rule-based text chain as a user runs it: ``dagster asset materialize`` with the default config.

One fresh ``REFINERY_HOME`` holding the real corpus (``benchmarks/real_corpus.py``) as one inbox
source; then, as a subprocess, ``dagster asset materialize -m definitions --select
raw_documents,clean_documents,heuristic_filtered,exact_deduplicated,fuzzy_deduplicated --partition
bench`` (the local environment: every step in the run's process), language labels on (the
default), or with ``--config-json`` for the variants given. Reported: MB/s per core as the corpus's
UTF-8 bytes over the CPU seconds of the whole process (user + system, start-up and imports
included: what the issue measured), the wall time, and each step's own time from Dagster's log.

Our modules' bytecode is compiled once per checkout before the timed runs (into a
``PYTHONPYCACHEPREFIX`` outside the checkout), as an installed package's is; ``--no-bytecode``
compiles them from source in every run instead, as the figures before 2026-12-07 did (this
environment sets ``PYTHONDONTWRITEBYTECODE``; that compilation was ~0.3 CPU s a run).
``--rounds N`` runs the variants N times, alternating with ``--baseline-code`` when given, and
reports each one's median run (and datatrove's median of N). With ``--baseline-code`` every run's
kept and rejected tables of every stage are compared with the baseline code's run of the same
round and variant (``same_outputs``: equal frames, every column), and the benchmark fails if any
differ.

Baseline in the same run: datatrove's Gopher quality → Gopher repetition → C4 filters on the same
documents (``benchmarks/adapters.py``, the ``bench`` extra), CPU seconds of the filters alone.

``--breakdown`` adds where the CPU goes, measured in this process on the same documents (each
part best of ``--repeat``): the cleaning's steps (ftfy gate, NFC, invisible characters and
whitespace in one compiled pass, beside the RE2 passes it replaced, PII redaction, the default
language labels), the heuristic rules, exact and fuzzy dedup on what the rules keep, and the
kernel's per-stage tax (reading the upstream Parquet into pandas, writing both outputs, the stage
statistics, the invariant checks re-reading the output). The whole-process CPU less these and
less ``import definitions`` is Dagster's own per-run and per-step work (run and event-log
bookkeeping, resources, check and metadata events).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_chain_dagster.py --real-mb 24 --breakdown
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

ASSETS = "raw_documents,clean_documents,heuristic_filtered,exact_deduplicated,fuzzy_deduplicated"
SOURCE = "bench"
STEP = re.compile(r'Finished execution of step "(\w+)" in ([\d.]+)(m?s)')
BYTECODE = True  # --no-bytecode: each run compiles our modules from source (the figures before 2026-12-07)
VARIANTS = {
    "default (fastText labels)": None,
    "labels off": {"ops": {"clean_documents": {"config": {"label_language": False}}}},
    "lingua labels (the old default)": {
        "ops": {"clean_documents": {"config": {"language_model": "lingua", "language_max_chars": 1000}}}
    },
}


def fresh_home(texts: list[str]) -> Path:
    home = Path(tempfile.mkdtemp(prefix="refinery-chain-"))
    inbox = home / "inbox" / "text" / SOURCE
    inbox.mkdir(parents=True)
    with (inbox / "docs.jsonl").open("w", encoding="utf-8") as out:
        for i, text in enumerate(texts):
            out.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    old = time.time() - 3600  # settled: the inbox scan waits for files still being written
    os.utime(inbox / "docs.jsonl", (old, old))
    (home / "dagster").mkdir()
    return home


def bytecode_cache(code: Path) -> Path:
    """Where the runs from ``code`` keep their compiled bytecode (``PYTHONPYCACHEPREFIX``): outside
    the checkout, so another one (``--baseline-code``) is left as it is, and one per checkout."""
    return Path(tempfile.gettempdir()) / "refinery-bench-pycache" / re.sub(r"\W", "_", str(code.resolve()))


def run(cmd: list[str], home: Path, code: Path = ROOT) -> tuple[float, float, str, int]:
    env = {
        **os.environ,
        "REFINERY_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "PYTHONPATH": str(code),
        "OMP_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
    }
    if BYTECODE:
        # Compiled once (warm_bytecode), as an installed package is: compiling some 220 modules
        # of ours from source in every run is no cost a user pays twice.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(bytecode_cache(code))
    else:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=code, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.stdout + done.stderr, done.returncode


def warm_bytecode(code: Path) -> None:
    """Compile what ``import definitions`` loads into :func:`bytecode_cache` (untimed)."""
    if BYTECODE:
        home = Path(tempfile.mkdtemp(prefix="refinery-warm-"))
        (home / "dagster").mkdir()
        run([sys.executable, "-c", "import definitions, dagster._cli"], home, code)


def materialize(texts: list[str], config: dict | None, code: Path = ROOT) -> dict:
    home = fresh_home(texts)
    py = sys.executable
    sync = (
        "from refinery_cli import launch; import os; from refinery.paths import Layout; "
        "layout = Layout.at(os.environ['REFINERY_HOME']); launch.prepare_environment(layout); "
        "launch.sync_partitions(layout, 'text')"
    )
    run([py, "-c", sync], home, code)
    cmd = [py, "-m", "dagster", "asset", "materialize", "-m", "definitions", "--select", ASSETS]
    cmd += ["--partition", SOURCE]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    cpu, wall, log, rc = run(cmd, home, code)
    if rc != 0 or "RUN_SUCCESS" not in log:
        raise RuntimeError(f"materialize failed (rc {rc}):\n{log[-3000:]}")
    steps = {m[1]: float(m[2]) / (1000 if m[3] == "ms" else 1) for m in STEP.finditer(log)}
    imports_cpu, _, _, _ = run([py, "-c", "import definitions"], home, code)
    return {
        "cpu_s": cpu,
        "wall_s": wall,
        "steps_s": steps,
        "import_definitions_cpu_s": imports_cpu,
        "home": str(home),
    }


def same_outputs(home_a: str, home_b: str) -> int:
    """Assert that two runs wrote equal kept and rejected rows for every stage (every column, in
    order; ``pandas.testing.assert_frame_equal``); returns how many tables were compared."""
    import pandas as pd
    import pyarrow.parquet as pq

    tables = sorted(p.relative_to(home_a) for p in Path(home_a, "storage").rglob("*.parquet"))
    other = sorted(p.relative_to(home_b) for p in Path(home_b, "storage").rglob("*.parquet"))
    if tables != other or not tables:
        raise AssertionError(f"the runs wrote different tables: {tables} vs {other}")
    for rel in tables:
        a, b = (pq.read_table(Path(h, rel)).to_pandas() for h in (home_a, home_b))
        pd.testing.assert_frame_equal(a, b, obj=str(rel))
    return len(tables)


def best_cpu(fn, repeat: int) -> float:
    """The least CPU seconds of ``repeat`` calls (the machine is shared: the least is the cost)."""
    times = []
    for _ in range(repeat):
        started = time.process_time()
        fn()
        times.append(time.process_time() - started)
    return min(times)


def breakdown(texts: list[str], repeat: int) -> dict[str, float]:
    """CPU seconds of each part of the chain's work on ``texts``, in this process (see the docstring)."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from refinery.batch import keep_all
    from refinery.clean import normalize
    from refinery.clean.cleaning import Cleaner, CleanParams
    from refinery.clean.pii import PII_KINDS, redact_batch
    from refinery.dedup.exact import ExactDeduper, ExactDedupParams
    from refinery.dedup.exact_index import SqliteExactIndex
    from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
    from refinery.dedup.lsh_index import SqliteFuzzyIndex
    from refinery.filters.chain import filter_batch
    from refinery.filters.params import HeuristicParams
    from refinery.kernel.checks import invariant_checks
    from refinery.kernel.runner import run_stage
    from refinery.stages.text import CLEAN_DOCUMENTS
    from refinery.stats import StageStats
    from refinery.storage import Storage
    from refinery.text.language_id import label_batch

    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts, "source": SOURCE})
    languages = CLEAN_DOCUMENTS.params().language_id()
    Cleaner(CleanParams(), languages)(frame.head(3))  # models and tables loaded before timing
    out: dict[str, float] = {}
    fixed = normalize.fix_unicode_batch(texts)
    out["clean: ftfy gate"] = best_cpu(lambda: normalize.fix_unicode_batch(texts), repeat)
    nfc = [t if t.isascii() else normalize.normalize_form(t, "NFC") for t in fixed]
    out["clean: NFC"] = best_cpu(
        lambda: [t if t.isascii() else normalize.normalize_form(t, "NFC") for t in fixed], repeat
    )
    arr = pa.array(nfc, pa.large_string())
    tidy = normalize.normalize_whitespace_batch(normalize.strip_invisible_batch(arr))
    normalize.tidy_batch(arr[:1], True, True)  # the compiled pass loaded before timing
    out["clean: invisible + whitespace (compiled, one pass)"] = best_cpu(
        lambda: normalize.tidy_batch(arr, True, True), repeat
    )
    out["clean: invisible + whitespace (the RE2 passes it replaced)"] = best_cpu(
        lambda: normalize.normalize_whitespace_batch(normalize.strip_invisible_batch(arr)), repeat
    )
    tidy_list = tidy.to_pylist()
    out["clean: PII redaction"] = best_cpu(lambda: redact_batch(tidy_list, tidy, set(PII_KINDS)), repeat)
    cleaned = frame.assign(text=redact_batch(tidy_list, tidy, set(PII_KINDS))[0])
    out["clean: language labels (default)"] = best_cpu(lambda: label_batch(cleaned, languages), repeat)
    out["clean: Cleaner, whole (the step's processor)"] = best_cpu(
        lambda: Cleaner(CleanParams(), languages)(frame), repeat
    )
    clean = Cleaner(CleanParams(), languages)(frame).kept
    heuristics = HeuristicParams()
    out["heuristics: filter_batch"] = best_cpu(lambda: filter_batch(clean, heuristics), repeat)
    kept = filter_batch(clean, heuristics).kept

    def dedup() -> None:
        with tempfile.TemporaryDirectory() as tmp:
            fuzzy_params = FuzzyDedupParams()
            with (
                SqliteExactIndex(Path(tmp) / "exact.sqlite").claiming(SOURCE) as exact_claims,
                SqliteFuzzyIndex(Path(tmp) / "fuzzy.sqlite", fuzzy_params.index_params()).claiming(
                    SOURCE
                ) as fuzzy_claims,
            ):
                FuzzyDeduper(fuzzy_claims)(ExactDeduper(exact_claims, ExactDedupParams())(kept).kept)

    out[f"exact + fuzzy dedup ({len(kept)} documents kept by the rules)"] = best_cpu(dedup, repeat)
    with tempfile.TemporaryDirectory() as tmp:
        storage = Storage(Path(tmp))
        path = storage.path("upstream", SOURCE)
        path.parent.mkdir(parents=True)
        pq.write_table(pa.Table.from_pandas(clean, preserve_index=False), path, compression="zstd")
        batches = list(storage.iter_batches("upstream", SOURCE))
        out["kernel per stage: read Parquet into pandas"] = best_cpu(
            lambda: list(storage.iter_batches("upstream", SOURCE)), repeat
        )

        def stats() -> None:
            s = StageStats(text_column="text")
            for b in batches:
                s.observe(b, keep_all(b))

        out["kernel per stage: statistics (StageStats.observe)"] = best_cpu(stats, repeat)
        whole = best_cpu(lambda: run_stage(storage, "upstream", "down", SOURCE, keep_all, [], {}), repeat)
        out["kernel per stage: write both outputs (zstd)"] = max(
            0.0,
            whole
            - out["kernel per stage: read Parquet into pandas"]
            - out["kernel per stage: statistics (StageStats.observe)"],
        )
        run = run_stage(storage, "upstream", "down", SOURCE, keep_all, [], {})
        out["kernel per stage: invariant checks (re-read the output)"] = best_cpu(
            lambda: invariant_checks(run, len(clean)), repeat
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=24)
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--breakdown", action="store_true", help="where the CPU goes (see above)")
    parser.add_argument(
        "--baseline-code",
        type=Path,
        default=None,
        help="another checkout (e.g. `git worktree add /tmp/base <commit>`): each variant also runs "
        "from it, alternating with this one, for a before/after in the same run",
    )
    parser.add_argument("--repeat", type=int, default=3, help="--breakdown: best of this many")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the variants this many times (alternating); median"
    )
    parser.add_argument(
        "--no-bytecode",
        action="store_true",
        help="compile our modules from source in every run (no bytecode kept), as before 2026-12-07",
    )
    args = parser.parse_args()
    global BYTECODE
    BYTECODE = not args.no_bytecode
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(args.real_mb)
    texts = [t for b in corpus.iter_batches(columns=("text",)) for t in b.column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    results: dict = {"documents": len(texts), "mb": round(mb, 2), "load_average_before": os.getloadavg()}
    if not args.skip_datatrove:
        from benchmarks import adapters

        rates = []
        for _ in range(args.rounds):
            dt = adapters.datatrove_chain(corpus, 2_000, None)
            rates.append(dt["bytes"] / 1e6 / dt["cpu_s"])
        results["datatrove_mb_per_s_rounds"] = [round(r, 3) for r in rates]
        results["datatrove_mb_per_s"] = round(statistics.median(rates), 3)
        print(
            f"datatrove Gopher quality -> repetition -> C4: {results['datatrove_mb_per_s']:.3f} MB/s per core"
            f" (rounds: {results['datatrove_mb_per_s_rounds']})"
        )
    runs = [(name, name, ROOT) for name in args.variants.split(",")]
    if args.baseline_code:
        runs = [
            r
            for name, _, _ in runs
            for r in ((name, name, ROOT), (name, f"{name} [baseline code]", args.baseline_code))
        ]
    for code in dict.fromkeys(code for _, _, code in runs):
        warm_bytecode(code)
    done: dict[str, list[dict]] = {}
    for round_ in range(args.rounds):
        for variant, name, code in runs:
            out = materialize(texts, VARIANTS[variant], code)
            out["mb_per_s_per_core"] = round(mb / out["cpu_s"], 2)
            done.setdefault(name, []).append(out)
            steps = ", ".join(f"{k} {v:.1f}" for k, v in out["steps_s"].items())
            print(
                f"round {round_ + 1} {name}: {out['mb_per_s_per_core']:.2f} MB/s per core "
                f"({out['cpu_s']:.1f} CPU s, {out['wall_s']:.1f} s wall); steps (s): {steps}; import "
                f"definitions {out['import_definitions_cpu_s']:.1f} CPU s; load {os.getloadavg()[0]:.1f}",
                flush=True,
            )
    if args.baseline_code:
        for variant in dict.fromkeys(v for v, _, _ in runs):
            for ours, theirs in zip(done[variant], done[f"{variant} [baseline code]"], strict=True):
                compared = same_outputs(ours["home"], theirs["home"])
            results.setdefault("same_outputs", {})[variant] = f"{compared} tables x {args.rounds} rounds"
            print(
                f"{variant}: kept and rejected rows equal to the baseline code's ({compared} tables "
                f"per run, {args.rounds} rounds)",
                flush=True,
            )
    for name, outs in done.items():
        out = sorted(outs, key=lambda o: o["cpu_s"])[len(outs) // 2]  # the median run
        out["rounds_mb_per_s_per_core"] = [o["mb_per_s_per_core"] for o in outs]
        if "datatrove_mb_per_s" in results:
            out["x_datatrove"] = round(out["mb_per_s_per_core"] / results["datatrove_mb_per_s"], 1)
        results[name] = out
        print(
            f"{name}: median {out['mb_per_s_per_core']:.2f} MB/s per core (rounds "
            f"{out['rounds_mb_per_s_per_core']}; {out.get('x_datatrove', '-')}x datatrove)",
            flush=True,
        )
    if args.breakdown:
        parts = breakdown(texts, args.repeat)
        results["breakdown_cpu_s"] = parts
        print(f"where the CPU goes on these {len(texts)} documents ({mb:.1f} MB), in this process:")
        for name, seconds in parts.items():
            print(f"  {name}: {seconds:.3f} CPU s ({mb / seconds if seconds else float('inf'):.1f} MB/s)")
    results["load_average_after"] = os.getloadavg()
    path = ROOT / "benchmarks" / "out" / "chain_dagster.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
