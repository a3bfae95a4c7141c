"""Where the test suite's time goes, per file and per xdist worker: a pytest plugin and its summary.

``--durations`` names the slowest phases but not which worker ran what when, so it cannot show an
idle worker at the end of a run or a file that holds one worker while the other has finished. This
plugin appends one JSON line per test (worker, file, start and end of the whole test protocol with
its fixtures, each phase's duration) to ``$REFINERY_SUITE_TIMELINE/<worker>.jsonl``; the summary
sums them per file, with the worker and the span each file took in the run::

    REFINERY_SUITE_TIMELINE=/tmp/timeline .venv/bin/python -m pytest -p benchmarks.suite_timeline \\
        -n 2 --dist loadfile --no-loadscope-reorder
    .venv/bin/python -m benchmarks.suite_timeline /tmp/timeline

Measurement only: nothing in the suite depends on the plugin, and it records nothing unless the
variable is set. ``--write-durations tests/file_durations.json`` turns a run's figures into the file
tests/conftest.py orders the suite by (the longest files first). (docs/testing.md has the figures it gave.)
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import time
from pathlib import Path

import pytest

TIMELINE_ENV = "REFINERY_SUITE_TIMELINE"
_phases: dict[str, dict[str, float]] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    started = time.time()
    yield
    folder = os.environ.get(TIMELINE_ENV)
    if not folder:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    record = {"worker": worker, "id": item.nodeid, "start": started, "end": time.time()}
    record["phases"] = _phases.pop(item.nodeid, {})
    Path(folder).mkdir(parents=True, exist_ok=True)
    with (Path(folder) / f"{worker}.jsonl").open("a") as out:
        out.write(json.dumps(record) + "\n")


def pytest_runtest_logreport(report) -> None:
    _phases.setdefault(report.nodeid, {})[report.when] = round(report.duration, 2)
    if report.failed:
        _phases[report.nodeid]["failed"] = 1


def summarize(folder: Path) -> list[str]:
    """Lines of a table: the run's wall time and each worker's busy time, then every file with its
    total, its worker and when (seconds from the first test's start) it started and ended."""
    records = [json.loads(line) for path in sorted(folder.glob("*.jsonl")) for line in path.open()]
    if not records:
        return [f"no records in {folder}"]
    first, last = min(r["start"] for r in records), max(r["end"] for r in records)
    per_file: dict[str, float] = collections.defaultdict(float)
    busy: dict[str, float] = collections.defaultdict(float)
    spans: dict[str, list] = {}
    failed: set[str] = set()
    for r in records:
        path, seconds = r["id"].split("::")[0], r["end"] - r["start"]
        per_file[path] += seconds
        busy[r["worker"]] += seconds
        span = spans.setdefault(path, [r["start"], r["end"], r["worker"]])
        span[0], span[1] = min(span[0], r["start"]), max(span[1], r["end"])
        if r["phases"].get("failed"):
            failed.add(path)
    lines = [
        f"wall {last - first:.0f} s, {len(records)} tests; busy: "
        + ", ".join(f"{w} {s:.0f} s" for w, s in sorted(busy.items())),
        "| file | seconds | worker | from | to |",
        "|---|---:|---|---:|---:|",
    ]
    for path, seconds in sorted(per_file.items(), key=lambda kv: -kv[1]):
        start, end, worker = spans[path]
        mark = " (failed)" if path in failed else ""
        lines.append(f"| {path}{mark} | {seconds:.1f} | {worker} | {start - first:.0f} | {end - first:.0f} |")
    return lines


def file_seconds(folder: Path) -> dict[str, float]:
    """Seconds per test file in a run (every phase of every test), for tests/file_durations.json."""
    per_file: dict[str, float] = collections.defaultdict(float)
    for path in sorted(folder.glob("*.jsonl")):
        for line in path.open():
            record = json.loads(line)
            per_file[record["id"].split("::")[0]] += record["end"] - record["start"]
    return {name: round(seconds, 1) for name, seconds in sorted(per_file.items())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="the $REFINERY_SUITE_TIMELINE folder of a run")
    parser.add_argument("--top", type=int, default=40, help="files shown (slowest first)")
    parser.add_argument(
        "--write-durations",
        type=Path,
        default=None,
        help="also write each file's seconds as JSON (tests/file_durations.json orders the suite's files)",
    )
    args = parser.parse_args(argv)
    if args.write_durations:
        args.write_durations.write_text(json.dumps(file_seconds(args.folder), indent=1) + "\n")
    lines = summarize(args.folder)
    print("\n".join(lines[: 3 + args.top]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
