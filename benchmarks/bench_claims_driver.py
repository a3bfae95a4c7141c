"""What the Dagster step does for ``fuzzy_deduplicated`` on a Ray cluster: its process tree's peak
RSS and CPU seconds, this checkout against another (``--baseline``), in the same run.

Since the claims plan (``refinery/dedup/claim_plan.py``) the workers compute the signatures and
write the rows; the step reads one part of ids and signatures at a time and claims. Before it, the
step read every row (text included) to claim and wrote the output itself. A two-node loopback
cluster (one CPU per node) is started here; one partition of ``--docs`` generated documents (every
tenth a near copy) is materialized through the Dagster CLI by each checkout, into a fresh home.
CPU seconds are the CLI's and its children's (``RUSAGE_CHILDREN``, which includes the
``refinery partitions`` call before it), Ray's workers excluded (they are the raylet's children).

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_claims_driver \\
        --docs 100000 --baseline /tmp/refinery-base   # git archive <commit> | tar -x -C /tmp/refinery-base
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_driver_memory import loopback_engine  # noqa: E402
from refinery import names  # noqa: E402
from refinery.paths import Layout  # noqa: E402
from refinery.storage import Storage  # noqa: E402
from tests.ray.driver_memory import materialize_measured, write_corpus  # noqa: E402

BIN = Path(sys.executable).parent
OUT = ROOT / "benchmarks" / "out"


def materialize(home: Layout, engine: dict, code: Path, source: str) -> dict:
    """fuzzy_deduplicated[source] by the Dagster CLI of checkout ``code``; wall s, peak RSS, CPU s."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    rc, peak, out = materialize_measured(home, engine, code, 1800, names.FUZZY_DEDUPLICATED, source)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc:
        print(out[-3000:])
        raise SystemExit(f"{code}: fuzzy_deduplicated failed")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    kept = Storage(home.storage).row_count(names.FUZZY_DEDUPLICATED, source)
    return {"wall_s": round(wall, 1), "peak_mb": round(peak / 2**20, 1), "cpu_s": round(cpu, 1), "kept": kept}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--docs", type=int, default=100_000)
    parser.add_argument("--baseline", type=Path, help="another checkout, measured the same way")
    parser.add_argument("--slice-rows", type=int, default=10_000)
    args = parser.parse_args()
    codes = [("claims plan (this checkout)", ROOT)] + ([("baseline", args.baseline)] if args.baseline else [])
    rows = []
    load = os.getloadavg()
    with (
        loopback_engine(args.slice_rows) as engine,
        tempfile.TemporaryDirectory(prefix="claims-driver-") as tmp,
    ):
        for label, code in codes:
            home = Layout.at(Path(tmp) / f"{len(rows)}")
            (source,) = write_corpus(home, args.docs, sources=1)
            rows.append({"code": label, "docs": args.docs, **materialize(home, engine, code, source)})
            print(rows[-1], flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "claims_driver.json").write_text(json.dumps({"load_before": load, "rows": rows}, indent=1))
    print(f"\nload average before: {load[0]:.1f}, after: {os.getloadavg()[0]:.1f}")
    print("| code | documents | kept | Dagster tree peak RSS (MB) | Dagster tree CPU s | wall s |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['code']} | {r['docs']:,} | {r['kept']:,} | {r['peak_mb']:.0f} | {r['cpu_s']:.1f} "
            f"| {r['wall_s']:.0f} |"
        )


if __name__ == "__main__":
    main()
