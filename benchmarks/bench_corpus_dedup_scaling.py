"""The corpus-wide fuzzy dedup on 1 against 2 Ray worker nodes, with every step's time split out.

:func:`refinery.dedup.corpus_shuffle.shuffle_dedup` (the steps ``corpus_fuzzy_dedup`` runs: signatures,
band pairs, join, verification, star rounds of the components, members, owners, table, keys, owner
check) on the same input three ways, in one run:

- the local engine (every task in this process): the baseline;
- a loopback Ray cluster of 1 node x 1 CPU, then one of 2 nodes x 1 CPU (``ray start`` per node, as
  :mod:`benchmarks.bench_ray_scaling` does), one task per CPU at a time.

Input: the real corpus (``benchmarks/real_corpus.py``, Debian docs, man pages, CPython docs; built on
this machine) plus ``--generated`` short documents (:func:`tests.ray.driver_memory.write_corpus`, a tenth
of them near-copies, so components form), as the exact_deduplicated partitions the asset reads. Each
engine runs once to warm up (Ray's worker processes and imports), then ``--repeats`` times; the median
is reported. Every run's table (ids, kept, duplicate_of) must equal the local engine's.

Each step's "work span" is from its first task's start to its last task's end (the tasks' own
clocks); "task CPU" sums the tasks' CPU seconds. The 2-over-1 ratio of the sum of work spans is the
part that can scale; the rest is dispatch between steps.

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_corpus_dedup_scaling \
        --real-mb 105 --generated 300000
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from benchmarks.bench_driver_memory import loopback_cluster
from benchmarks.bench_ray_scaling import machine_busy, machine_ceiling, uptime
from refinery import names
from refinery.dedup.corpus_dedup import CorpusDedupParams
from refinery.dedup.corpus_shuffle import plan_pieces, shuffle_dedup, table_parts
from refinery.engine.tasks import InProcessTasks, RayTasks
from refinery.paths import Layout
from refinery.storage import Storage

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"


def build_input(tmp: Path, real_mb: float, generated: int) -> tuple[list[tuple[str, Path]], int, float]:
    """([(source, exact_deduplicated parquet)], documents, text MB): the real corpus as one source
    per file, then the generated sources."""
    from benchmarks.real_corpus import ensure_real_corpus
    from tests.ray.driver_memory import write_corpus

    files: list[tuple[str, Path]] = []
    if real_mb > 0:
        corpus = ensure_real_corpus(max_mb=real_mb, log=lambda *_: None)
        files += [(f"real{i:03d}", f) for i, f in enumerate(corpus.files)]
    if generated:
        home = Layout.at(tmp / "gen")
        storage = Storage(home.storage)
        files += [(s, storage.require(names.EXACT_DEDUPLICATED, s)) for s in write_corpus(home, generated)]
    docs = 0
    text_bytes = 0
    for _, f in files:
        table = pq.read_table(f, columns=["text"])
        docs += table.num_rows
        text_bytes += sum(len(t.encode()) for t in table.column("text").to_pylist())
    return files, docs, text_bytes / 1e6


def read_table(plan) -> pd.DataFrame:
    """The run's output table (every input row with its decision), in first-come order."""
    frame = pd.concat([pd.read_parquet(p) for p in table_parts(plan)], ignore_index=True)
    keep = [c for c in ("source", "id", "kept", "duplicate_of") if c in frame.columns]
    return frame[keep].reset_index(drop=True)


def one_run(files, runner, workers: int, work: Path, piece_rows: int) -> dict:
    shutil.rmtree(work, ignore_errors=True)
    busy0, total0 = machine_busy()
    seconds: dict = {}
    if hasattr(runner, "timeline"):
        runner.timeline = []
    started = time.perf_counter()
    plan, result = shuffle_dedup(
        plan_pieces(files, piece_rows), CorpusDedupParams(), runner, work, workers, {}, seconds
    )
    wall = time.perf_counter() - started
    busy1, total1 = machine_busy()
    steps = list(getattr(runner, "steps", []))
    if hasattr(runner, "steps"):
        runner.steps.clear()
    return {
        "wall_s": wall,
        "steps_s": seconds,
        "ray_steps": steps,
        "losses": span_losses(runner.timeline, workers) if getattr(runner, "timeline", None) else [],
        "work_span_s": sum(s.get("work_s", 0.0) for s in steps) if steps else None,
        "task_cpu_s": sum(s.get("task_cpu_s", 0.0) for s in steps) if steps else None,
        "machine_busy_cores": 2 * (busy1 - busy0) / max(1.0, total1 - total0),
        "removed": result.stats["removed"],
        "rounds": result.stats["component_rounds"],
        "table": read_table(plan),
    }


def span_losses(timeline: list[dict], workers: int) -> list[dict]:
    """Per map, where its work span goes beyond its tasks' seconds shared evenly over ``workers``:
    ``tail_s``, workers idle at the barrier while another finishes its last task (summed over
    workers); ``gaps_s``, time between one worker's consecutive tasks (dispatch), summed."""
    found = []
    for step in timeline:
        tasks = step["tasks"]
        if not tasks:
            continue
        first, last = min(t["start"] for t in tasks), max(t["end"] for t in tasks)
        busy = sum(t["end"] - t["start"] for t in tasks)
        by_pid: dict[int, list[dict]] = {}
        for t in tasks:
            by_pid.setdefault(t["pid"], []).append(t)
        tail = sum(last - max(t["end"] for t in ts) for ts in by_pid.values())
        tail += max(0, workers - len(by_pid)) * (last - first)  # a worker that ran none of them
        gaps = 0.0
        for ts in by_pid.values():
            ts.sort(key=lambda t: t["start"])
            gaps += sum(max(0.0, b["start"] - a["end"]) for a, b in itertools.pairwise(ts))
        found.append(
            {
                "step": step["step"],
                "tasks": len(tasks),
                "span_s": round(last - first, 3),
                "even_s": round(busy / workers, 3),
                "tail_s": round(tail, 3),
                "gaps_s": round(gaps, 3),
                "longest_s": round(max(t["end"] - t["start"] for t in tasks), 3),
            }
        )
    return found


def measure(files, runner, workers, work, piece_rows, repeats, want) -> dict:
    runs = [one_run(files, runner, workers, work, piece_rows) for _ in range(repeats + 1)]
    for r in runs:
        print(f"    {r['wall_s']:7.2f} s  work span {r['work_span_s']}  removed {r['removed']}", flush=True)
    same = want is None or all(r["table"].equals(want) for r in runs)
    table = runs[0]["table"]
    timed = runs[1:]

    def med(key):
        values = [r[key] for r in timed if r[key] is not None]
        return statistics.median(values) if values else None

    middle = sorted(timed, key=lambda r: r["wall_s"])[len(timed) // 2]
    return {
        "first_s": runs[0]["wall_s"],
        "wall_s": med("wall_s"),
        "wall_all": [round(r["wall_s"], 2) for r in timed],
        "work_span_s": med("work_span_s"),
        "task_cpu_s": med("task_cpu_s"),
        "machine_busy_cores": med("machine_busy_cores"),
        "removed": runs[0]["removed"],
        "rounds": runs[0]["rounds"],
        "steps_s": middle["steps_s"],
        "ray_steps": middle["ray_steps"],
        "losses": middle["losses"],
        "same": bool(same),
        "table": table,
    }


def render(doc: dict) -> list[str]:
    r = doc["results"]
    lines = [
        f"{doc['date']}; {doc['documents']:,} documents, {doc['text_mb']} MB ({doc['args']}); pieces of "
        f"{doc['piece_rows']:,} rows; median of {doc['repeats']} runs after a warm-up run. Load before "
        f"`{doc['load_before']}`, after `{doc['load_after']}`. Two busy processes over one, same run: "
        f"{doc['ceiling']['two_over_one']:.2f}x.",
        "",
        "| engine | wall s (runs) | warm-up s | sum of steps' work spans s | tasks' CPU s | "
        "machine busy cores | removed | component rounds | same table |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for label, m in r.items():
        span = "–" if m["work_span_s"] is None else f"{m['work_span_s']:.2f}"
        cpu = "–" if m["task_cpu_s"] is None else f"{m['task_cpu_s']:.2f}"
        lines.append(
            f"| {label} | {m['wall_s']:.2f} ({', '.join(map(str, m['wall_all']))}) | "
            f"{m['first_s']:.2f} | {span} | {cpu} | {m['machine_busy_cores']:.2f} | "
            f"{m['removed']:,} | {m['rounds']} | {'yes' if m['same'] else 'NO'} |"
        )
    one, two = r.get("ray 1 node"), r.get("ray 2 nodes")
    if one and two:
        lines += [
            "",
            f"2 over 1: wall **{one['wall_s'] / two['wall_s']:.2f}x**, sum of work spans "
            f"**{one['work_span_s'] / two['work_span_s']:.2f}x**"
            + (
                f"; 2 Ray nodes over the local engine: {r['local']['wall_s'] / two['wall_s']:.2f}x."
                if "local" in r
                else " (local engine not run)."
            ),
            "",
            "Per step (the median run): wall s local / 1 node / 2 nodes, and the 2 nodes' work span and "
            "tasks:",
            "",
            "| step | local s | 1 node s | 2 nodes s | 2 nodes: work span s, tasks, task CPU s |",
            "|---|---:|---:|---:|---|",
        ]
        spans = {s["step"]: s for s in two["ray_steps"]}
        local_steps = r["local"]["steps_s"] if "local" in r else dict.fromkeys(one["steps_s"], float("nan"))
        for step, local_s in local_steps.items():
            s = spans.get(f"{step}_task") or spans.get(step) or {}
            extra = f"{s.get('work_s', '–')}, {s.get('tasks', '–')}, {s.get('task_cpu_s', '–')}" if s else "–"
            lines.append(
                f"| {step} | {local_s:.2f} | {one['steps_s'].get(step, float('nan')):.2f} | "
                f"{two['steps_s'].get(step, float('nan')):.2f} | {extra} |"
            )
    if two and two.get("losses"):
        lines += [
            "",
            "Where the 2 nodes' work span goes (the median run): each map's span against its tasks' seconds "
            "shared evenly over the two workers; idle at the barrier (summed over workers) and between one "
            "worker's tasks:",
            "",
            "| map | tasks | work span s | even share s | idle at the barrier s | between tasks s "
            "| longest task s |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for x in two["losses"]:
            lines.append(
                f"| {x['step']} | {x['tasks']} | {x['span_s']:.3f} | {x['even_s']:.3f} | {x['tail_s']:.3f} | "
                f"{x['gaps_s']:.3f} | {x['longest_s']:.3f} |"
            )
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-mb", type=float, default=105)
    p.add_argument("--generated", type=int, default=300_000)
    p.add_argument("--piece-rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", type=Path, default=OUT / "corpus_dedup_scaling.md")
    p.add_argument(
        "--no-local", action="store_true", help="skip the local engine (the Ray runs' tables go unchecked)"
    )
    args = p.parse_args()
    import ray

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = uptime()
    ceiling = machine_ceiling()
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="corpus-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        files, docs, mb = build_input(tmp, args.real_mb, args.generated)
        print(f"{docs:,} documents, {mb:.1f} MB; load {load_before}", flush=True)
        want = None
        if not args.no_local:
            print("  local", flush=True)
            results["local"] = measure(
                files, InProcessTasks(), 1, tmp / "work", args.piece_rows, args.repeats, None
            )
            want = results["local"]["table"]
        for nodes in (1, 2):
            label = f"ray {nodes} node{'s' if nodes > 1 else ''}"
            with loopback_cluster(nodes=nodes) as address:
                ray.init(address=address, _node_ip_address="127.0.0.1", log_to_driver=False)
                try:
                    print(f"  {label}", flush=True)
                    results[label] = measure(files, RayTasks(), nodes, tmp / "work", args.piece_rows,
                                             args.repeats, want)  # fmt: skip
                finally:
                    ray.shutdown()
    for m in results.values():
        m.pop("table")
    doc = {
        "date": date,
        "documents": docs,
        "text_mb": round(mb, 2),
        "piece_rows": args.piece_rows,
        "repeats": args.repeats,
        "args": f"real {args.real_mb:g} MB + {args.generated:,} generated",
        "load_before": load_before,
        "load_after": uptime(),
        "ceiling": ceiling,
        "results": results,
    }
    text = "\n".join(render(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    print("\n" + text)


if __name__ == "__main__":
    main()
