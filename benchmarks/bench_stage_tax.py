"""The per-stage tax in fresh processes: read, statistics, write, invariant checks; user and system CPU.

What every full-size stage pays around its processor (``refinery.kernel.runner.run_stage`` and
``refinery.kernel.checks.invariant_checks``), measured as a stage runs in a process of its own: the
real corpus's documents (``id``, ``text``, ``source``) are written once as an upstream partition,
then each round starts one fresh interpreter per variant (alternating) that runs two stages that
keep every row (the upstream into ``a``, ``a`` into ``b``: the shape of raw_documents →
clean_documents → heuristic_filtered) with their checks, and reports its user and system CPU
seconds, minor page faults and peak RSS. A variant is a set of environment variables (``--env
NAME=VALUE``, several separated by commas; ``-`` for none), so allocator settings can be compared
(pyarrow allocates through its bundled mimalloc, which returns freed pages to the system
``MIMALLOC_PURGE_DELAY`` ms after they are freed).

    PYTHONPATH=$PWD .venv/bin/python benchmarks/bench_stage_tax.py --real-mb 105 --rounds 5 \\
        --env - --env MIMALLOC_PURGE_DELAY=5000
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

SOURCE = "bench"
CHILD = """
import json, resource, sys
import refinery  # first, as definitions imports it
from refinery.batch import keep_all
from refinery.kernel.checks import invariant_checks
from refinery.kernel.runner import run_stage
from refinery.storage import Storage

storage = Storage(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF)
for upstream, asset in (("upstream", "a"), ("a", "b")):
    run = run_stage(storage, upstream, asset, "bench", keep_all, [], {})
    checks = invariant_checks(run, run.stats.rows_in, "text", storage)
    assert all(check.passed for check in checks), checks
after = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({
    "user_s": after.ru_utime - before.ru_utime,
    "sys_s": after.ru_stime - before.ru_stime,
    "minflt": after.ru_minflt - before.ru_minflt,
    "maxrss_mb": after.ru_maxrss / 1024,
}))
"""


def write_upstream(root: Path, real_mb: float) -> float:
    """The real corpus as the upstream partition (one row group per 5,000 documents); its MB."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from benchmarks.real_corpus import ensure_real_corpus

    texts = [t for b in ensure_real_corpus(real_mb).iter_batches(columns=("text",)) for t in b.column("text")]
    table = pa.table(
        {
            "id": [f"d{i}" for i in range(len(texts))],
            "text": pa.array([t.as_py() for t in texts], pa.large_string()),
            "source": [SOURCE] * len(texts),
        }
    )
    path = root / "upstream" / f"{SOURCE}.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(table, path, compression="zstd", row_group_size=5_000)
    return pa.compute.sum(pa.compute.binary_length(table.column("text"))).as_py() / 1e6


def run_variant(root: Path, variant: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "MIMALLOC_PURGE_DELAY"}
    env.update({"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    if variant != "-":
        env.update(dict(item.split("=", 1) for item in variant.split(",")))
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(root)], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--real-mb", type=float, default=105)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--env", action="append", default=None, help="a variant's variables; repeatable")
    args = parser.parse_args()
    variants = args.env or ["-", "MIMALLOC_PURGE_DELAY=5000"]
    with tempfile.TemporaryDirectory(prefix="refinery-tax-") as tmp:
        mb = write_upstream(Path(tmp), args.real_mb)
        rounds: dict[str, list[dict]] = {v: [] for v in variants}
        for _ in range(args.rounds):
            for variant in variants:
                rounds[variant].append(run_variant(Path(tmp), variant))
    load = os.getloadavg()[0]
    print(f"two full-size stages + checks on {mb:.1f} MB, {args.rounds} rounds, medians (load {load:.1f}):")
    for variant, runs in rounds.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        totals = [r["user_s"] + r["sys_s"] for r in runs]
        total = statistics.median(totals)
        listed = ", ".join(f"{t:.2f}" for t in totals)
        print(
            f"  [{variant}] user {med['user_s']:.3f}  sys {med['sys_s']:.3f}  total {total:.3f} CPU s  "
            f"minflt {med['minflt']:.0f}  peak RSS {med['maxrss_mb']:.0f} MB  "
            f"(totals {listed})"
        )


if __name__ == "__main__":
    main()
