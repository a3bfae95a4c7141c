"""The rule-based text chain as a user runs it: ``dagster asset materialize`` with the default config.

One fresh ``REFINERY_HOME`` holding the real corpus (``benchmarks/real_corpus.py``) as one inbox
source; then, as a subprocess, ``dagster asset materialize -m definitions --select
raw_documents,clean_documents,heuristic_filtered,exact_deduplicated,fuzzy_deduplicated --partition
bench`` (the local environment: every step in the run's process), language labels on (the
default), or with ``--config-json`` for the variants given. Reported: MB/s per core as the corpus's
UTF-8 bytes over the CPU seconds of the whole process (user + system, start-up and imports
included: what the issue measured), the wall time, and each step's own time from Dagster's log.

Baseline in the same run: datatrove's Gopher quality → Gopher repetition → C4 filters on the same
documents (``benchmarks/adapters.py``, the ``bench`` extra), CPU seconds of the filters alone.

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_chain_dagster.py --real-mb 24
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
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


def run(cmd: list[str], home: Path) -> tuple[float, float, str, int]:
    env = {
        **os.environ,
        "REFINERY_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "RAYON_NUM_THREADS": "1",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall, done.stdout + done.stderr, done.returncode


def materialize(texts: list[str], config: dict | None) -> dict:
    home = fresh_home(texts)
    py = sys.executable
    sync = (
        "from refinery_cli import launch; import os; from refinery.paths import Layout; "
        "layout = Layout.at(os.environ['REFINERY_HOME']); launch.prepare_environment(layout); "
        "launch.sync_partitions(layout, 'text')"
    )
    run([py, "-c", sync], home)
    cmd = [py, "-m", "dagster", "asset", "materialize", "-m", "definitions", "--select", ASSETS]
    cmd += ["--partition", SOURCE]
    if config:
        cmd += ["--config-json", json.dumps(config)]
    cpu, wall, log, rc = run(cmd, home)
    if rc != 0 or "RUN_SUCCESS" not in log:
        raise RuntimeError(f"materialize failed (rc {rc}):\n{log[-3000:]}")
    steps = {m[1]: float(m[2]) / (1000 if m[3] == "ms" else 1) for m in STEP.finditer(log)}
    imports_cpu, _, _, _ = run([py, "-c", "import definitions"], home)
    return {"cpu_s": cpu, "wall_s": wall, "steps_s": steps, "import_definitions_cpu_s": imports_cpu}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=24)
    parser.add_argument("--skip-datatrove", action="store_true")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args()
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(args.real_mb)
    texts = [t for b in corpus.iter_batches(columns=("text",)) for t in b.column("text").to_pylist()]
    mb = sum(len(t.encode()) for t in texts) / 1e6
    results: dict = {"documents": len(texts), "mb": round(mb, 2), "load_average_before": os.getloadavg()}
    if not args.skip_datatrove:
        from benchmarks import adapters

        dt = adapters.datatrove_chain(corpus, 2_000, None)
        results["datatrove_mb_per_s"] = round(dt["bytes"] / 1e6 / dt["cpu_s"], 3)
        print(
            f"datatrove Gopher quality -> repetition -> C4: {results['datatrove_mb_per_s']:.3f} MB/s per core"
        )
    for name in args.variants.split(","):
        out = materialize(texts, VARIANTS[name])
        out["mb_per_s_per_core"] = round(mb / out["cpu_s"], 2)
        if "datatrove_mb_per_s" in results:
            out["x_datatrove"] = round(out["mb_per_s_per_core"] / results["datatrove_mb_per_s"], 1)
        results[name] = out
        steps = ", ".join(f"{k} {v:.1f}" for k, v in out["steps_s"].items())
        print(
            f"{name}: {out['mb_per_s_per_core']:.2f} MB/s per core ({out['cpu_s']:.1f} CPU s, "
            f"{out['wall_s']:.1f} s wall; {out.get('x_datatrove', '-')}x datatrove); steps (s): {steps}; "
            f"import definitions {out['import_definitions_cpu_s']:.1f} CPU s",
            flush=True,
        )
    results["load_average_after"] = os.getloadavg()
    path = ROOT / "benchmarks" / "out" / "chain_dagster.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
