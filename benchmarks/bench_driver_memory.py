"""The Dagster process tree's peak RSS against corpus size, corpus_fuzzy_dedup on a Ray cluster.

A two-node Ray cluster on loopback (one CPU per node, each node its own process tree) is started
here; corpus_fuzzy_dedup is materialized by the Dagster CLI over generated exact_deduplicated
partitions of each size, and the RSS of the CLI's whole process tree (Ray's workers excluded) is
sampled every 50 ms (:mod:`tests.ray.driver_memory`). ``--baseline DIR`` measures another checkout
the same way in the same run (the code before the shuffle: ``git archive <commit> | tar -x -C DIR``).

    flock /tmp/refinery-heavy.lock .venv/bin/python benchmarks/bench_driver_memory.py \\
        --docs 50000 200000 --baseline /tmp/refinery-base

Writes benchmarks/out/driver_memory.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from refinery.engine import loopback  # noqa: E402
from refinery.paths import Layout  # noqa: E402
from tests.ray.driver_memory import materialize_measured, write_corpus  # noqa: E402

BIN = Path(sys.executable).parent
OUT = ROOT / "benchmarks" / "out"


@contextlib.contextmanager
def loopback_cluster(cpus_per_node: int = 1, nodes: int = 2) -> Iterator[str]:
    """The address of a loopback cluster (:mod:`refinery.engine.loopback`) whose workers import
    this checkout (benchmarks/scale_suite.py uses it too)."""
    with loopback.loopback_cluster(nodes, cpus_per_node, env={"PYTHONPATH": str(ROOT)}) as cluster:
        yield cluster.address


@contextlib.contextmanager
def loopback_engine(slice_rows: int) -> Iterator[dict]:
    """The ``engine`` resource's config for a fresh loopback cluster (:func:`loopback_cluster`)."""
    with loopback_cluster() as address:
        yield {"kind": "ray", "address": address, "node_ip_address": "127.0.0.1", "slice_rows": slice_rows}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, nargs="+", default=[50_000, 200_000])
    parser.add_argument("--baseline", type=Path, help="another checkout to measure the same way")
    parser.add_argument("--slice-rows", type=int, default=10_000)
    args = parser.parse_args()
    codes = [("shuffle (this checkout)", ROOT)] + (
        [("before (baseline)", args.baseline)] if args.baseline else []
    )
    rows = []
    with (
        loopback_engine(args.slice_rows) as engine,
        tempfile.TemporaryDirectory(prefix="driver-mem-") as tmp,
    ):
        for label, code in codes:
            for docs in args.docs:
                home = Layout.at(Path(tmp) / f"{len(rows)}")
                write_corpus(home, docs)
                t0 = time.perf_counter()
                rc, peak, out = materialize_measured(home, engine, code)
                seconds = time.perf_counter() - t0
                if rc:
                    print(out[-3000:])
                    raise SystemExit(f"{label} at {docs} documents failed")
                rows.append(
                    {
                        "code": label,
                        "docs": docs,
                        "peak_mb": round(peak / 2**20, 1),
                        "seconds": round(seconds, 1),
                    }
                )
                print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "driver_memory.json").write_text(json.dumps(rows, indent=1))
    print("\n| code | documents | Dagster tree peak RSS (MB) | ratio to the smallest | wall s |")
    print("|---|---|---|---|---|")
    for row in rows:
        first = next(r for r in rows if r["code"] == row["code"])
        ratio = row["peak_mb"] / first["peak_mb"]
        print(
            f"| {row['code']} | {row['docs']:,} | {row['peak_mb']:.0f} | {ratio:.2f}x "
            f"| {row['seconds']:.0f} |"
        )


if __name__ == "__main__":
    main()
