"""Wall time of one small partition through the rule-based text chain, from the command line.

Builds a fresh ``REFINERY_HOME`` in a temporary folder with one inbox source of ``--docs`` real
documents (from ``benchmarks/real_corpus.py``, or generated prose with ``--generated``), then runs
each way of materializing raw_documents → fuzzy_deduplicated for that partition as a subprocess
and reports its wall time (what a user waits for, start-up and imports included):

- ``dagster asset materialize -m definitions --select <the five assets> --partition <source>``
  with the definitions' executor for ``REFINERY_ENVIRONMENT=local``: in-process (every step in the
  run's process; the ``cluster`` environment's multiprocess executor starts a process per step);
- ``launch.run_partitioned_job(layout, "text", "text_prefilter")``, what ``refinery run`` does for
  the rule-based half (``execute_in_process``), in a fresh interpreter;
- ``python -c "import definitions"`` alone, the fixed cost every step process pays.

Each is run ``--repeat`` times on a fresh home (dedup indexes empty) and the best is kept.

    .venv/bin/python -m benchmarks.bench_partition --docs 100
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ASSETS = "raw_documents,clean_documents,heuristic_filtered,exact_deduplicated,fuzzy_deduplicated"
SOURCE = "bench"


def documents(n: int, generated: bool) -> list[str]:
    if generated:
        import random

        from refinery.sample import prose

        rng = random.Random(0)
        return [prose.article(rng) for _ in range(n)]
    from benchmarks.real_corpus import ensure_real_corpus

    corpus = ensure_real_corpus(24, log=lambda m: None)
    batch = next(corpus.iter_batches(n, columns=("text",)))
    return batch.column("text").to_pylist()


def fresh_home(texts: list[str]) -> Path:
    home = Path(tempfile.mkdtemp(prefix="refinery-bench-"))
    inbox = home / "inbox" / "text" / SOURCE
    inbox.mkdir(parents=True)
    with (inbox / "docs.jsonl").open("w", encoding="utf-8") as fh:
        for i, text in enumerate(texts):
            fh.write(json.dumps({"id": f"d{i}", "text": text}) + "\n")
    old = time.time() - 3600  # settled: the inbox scan waits for files that are still changing
    os.utime(inbox / "docs.jsonl", (old, old))
    return home


def timed(cmd: list[str], home: Path) -> tuple[float, int, str]:
    env = {
        **os.environ,
        "REFINERY_HOME": str(home),
        "DAGSTER_HOME": str(home / "dagster"),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
    }
    (home / "dagster").mkdir(exist_ok=True)
    started = time.perf_counter()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    return time.perf_counter() - started, done.returncode, (done.stdout + done.stderr)[-2000:]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100)
    parser.add_argument("--generated", action="store_true", help="generated prose instead of real text")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--skip", default="", help="comma-separated ways to leave out")
    args = parser.parse_args()
    texts = documents(args.docs, args.generated)
    py = sys.executable
    ways = {
        "import definitions": [py, "-c", "import definitions"],
        "dagster asset materialize (local environment: in-process executor)": [
            *(py, "-m", "dagster", "asset", "materialize", "-m", "definitions"),
            *("--select", ASSETS, "--partition", SOURCE),
        ],
        "refinery run's rule-based half (execute_in_process)": [
            py,
            "-c",
            "from refinery_cli import launch; from refinery.paths import Layout; import os; "
            "layout = Layout.at(os.environ['REFINERY_HOME']); launch.prepare_environment(layout); "
            "out = launch.run_partitioned_job(layout, 'text', 'text_prefilter'); "
            "assert all(out.values()), out",
        ],
    }
    skip = {s for s in args.skip.split(",") if s}
    results = {}
    for name, cmd in ways.items():
        if name in skip:
            continue
        best = None
        for _ in range(args.repeat):
            home = fresh_home(texts)
            if "materialize" in name:  # the partition must exist first (what the sensor does)
                timed([py, "-c", "from refinery_cli import launch; "
                       "from refinery.paths import Layout; import os; "
                       "layout = Layout.at(os.environ['REFINERY_HOME']); launch.prepare_environment(layout); "
                       "launch.sync_partitions(layout, 'text')"], home)  # fmt: skip
            seconds, rc, tail = timed(cmd, home)
            if rc != 0:  # a failed way has no time
                print(f"{name}: failed (rc {rc})\n{tail}", file=sys.stderr)
                best = None
                break
            best = seconds if best is None else min(best, seconds)
        results[name] = best
        shown = "failed" if best is None else f"{best:7.1f} s wall"
        print(f"{name:<70} {shown}", flush=True)
    print(json.dumps({"docs": args.docs, "load_average": os.getloadavg(), "wall_s": results}, indent=1))


if __name__ == "__main__":
    main()
