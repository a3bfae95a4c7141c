"""The corpus-wide fuzzy dedup on 1 against 2 Ray worker nodes, runs interleaved, with every step's
time and every process's CPU split out.

:func:`refinery.dedup.corpus_shuffle.shuffle_dedup` (the steps ``corpus_fuzzy_dedup`` runs: signatures,
band pairs, join, verification, star rounds of the components, members, owners, table, keys, owner
check) on the same input:

- the local engine (every task in this process): the reference table and a baseline;
- a loopback Ray cluster of 1 node x 1 CPU and one of 2 nodes x 1 CPU (``ray start`` per node, as
  :mod:`benchmarks.bench_ray_scaling` does), one task per CPU at a time, **both up at once**, each
  with its own driver process (warm workers, connected once). The drivers take turns, run by run:
  round ``i`` runs 1 then 2 nodes when ``i`` is even, 2 then 1 when odd, so a change in the
  machine's load (other jobs, the page cache, writeback) falls on both sides and both orders are
  measured. Session 8 ran every 1-node run, then every 2-node run on a fresh cluster: its two passes
  gave 1.93x and 1.48x (the load rose from 1.6 to 3.2 during the second's 2-node runs). While one
  cluster runs, the others are stopped (SIGSTOP to their sessions and drivers, SIGCONT after): idle,
  a 1-node cluster's Ray processes take ~0.04 cores and a 2-node one's ~0.06, on the 2 cores the
  measured run needs (``--no-freeze-idle`` leaves them running).
- ``--before PATH``: the same two clusters and drivers again for another checkout (the code before a
  change), in the same rounds: round ``i`` runs this 1, this 2, before 1, before 2, reversed when odd.

Input: the real corpus (``benchmarks/real_corpus.py``, Debian docs, man pages, CPython docs; built on
this machine) plus ``--generated`` short documents (:func:`tests.ray.driver_memory.write_corpus`, a tenth
of them near-copies, so components form), as the exact_deduplicated partitions the asset reads. Each
driver runs once to warm up (Ray's worker processes, imports, numba's caches), then ``--repeats``
rounds; medians are reported, and the per-round ratios. Every run's table (ids, kept, duplicate_of)
must equal the local engine's (compared by a hash of the table).

Each step's "work span" is from its first task's start to its last task's end (the tasks' own
clocks); "task CPU" sums the tasks' CPU seconds. Per run, from ``/proc``: the CPU seconds of the
measured cluster's processes (raylets, GCS, workers) and its driver, of the idle clusters, and of
the rest of the machine (other jobs): a run that lost to another job says so.

    flock /tmp/refinery-heavy.lock .venv/bin/python -m benchmarks.bench_corpus_dedup_scaling \
        --real-mb 105 --generated 300000
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import itertools
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
TICK = os.sysconf("SC_CLK_TCK")
RESULT = "RESULT "  # a driver's answer line (Ray may print on its stdout too)


def build_input(tmp: Path, real_mb: float, generated: int) -> tuple[list[tuple[str, Path]], int, float]:
    """([(source, exact_deduplicated parquet)], documents, text MB): the real corpus as one source
    per file, then the generated sources."""
    import pyarrow.parquet as pq

    from benchmarks.real_corpus import ensure_real_corpus
    from refinery import names
    from refinery.paths import Layout
    from refinery.storage import Storage
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


def read_table(plan):
    """The run's output table (every input row with its decision), in first-come order."""
    import pandas as pd

    from refinery.dedup.corpus_shuffle import table_parts

    frame = pd.concat([pd.read_parquet(p) for p in table_parts(plan)], ignore_index=True)
    keep = [c for c in ("source", "id", "kept", "duplicate_of") if c in frame.columns]
    return frame[keep].reset_index(drop=True)


def one_run(files, runner, workers: int, work: Path, piece_rows: int) -> dict:
    from refinery.dedup.corpus_dedup import CorpusDedupParams
    from refinery.dedup.corpus_shuffle import plan_pieces, shuffle_dedup

    shutil.rmtree(work, ignore_errors=True)
    seconds: dict = {}
    if hasattr(runner, "timeline"):
        runner.timeline = []
    started = time.perf_counter()
    plan, result = shuffle_dedup(
        plan_pieces(files, piece_rows), CorpusDedupParams(), runner, work, workers, {}, seconds
    )
    wall = time.perf_counter() - started
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


# -- one driver per cluster: a child process that runs the dedup when told ------------------------
def table_digest(table) -> str:
    """A hash of the decision table (every row, in order): equal tables, equal digests."""
    import pandas as pd

    return hashlib.sha256(pd.util.hash_pandas_object(table, index=True).to_numpy().tobytes()).hexdigest()[:16]


def serve(args) -> None:
    """The driver of one cluster: connects once, then one run per ``run`` line on stdin, its result
    as one ``RESULT {json}`` line. Imports only what a checkout of main has too (``--before``)."""
    import ray

    from refinery.engine.tasks import RayTasks

    ray.init(address=args.address, _node_ip_address="127.0.0.1", log_to_driver=False)
    files = [(s, Path(f)) for s, f in json.loads(Path(args.files).read_text())]
    runner = RayTasks(timeline=[])
    for line in sys.stdin:
        if line.strip() != "run":
            break
        cpu0 = time.process_time()
        r = one_run(files, runner, args.workers, Path(args.work), args.piece_rows)
        r["digest"] = table_digest(r.pop("table"))
        r["driver_cpu_s"] = time.process_time() - cpu0
        print(RESULT + json.dumps(r, default=float), flush=True)
    ray.shutdown()


def process_ticks() -> dict[int, tuple[int, int, str]]:
    """{pid: (session, CPU ticks so far, name)} of every process on the machine (a node's ``ray
    start`` leads a session: its raylet, GCS, agents and workers are in it)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            head, _, tail = Path(f"/proc/{entry}/stat").read_text().rpartition(")")
        except OSError:
            continue
        fields = tail.split()
        found[int(entry)] = (int(fields[3]), int(fields[11]) + int(fields[12]), head.partition("(")[2])
    return found


def kind_of(pid: int, name: str, driver: int) -> str:
    """Which part of a cluster a process is: the driver, a task worker, the raylet, the GCS, or
    Ray's other processes (agents, monitors, ``ray start``)."""
    if pid == driver:
        return "driver"
    if name in ("raylet", "gcs_server"):
        return name
    if name.startswith("ray::") and not name.startswith(("ray::Dashboard", "ray::RuntimeEnv")):
        return "workers"
    return "other Ray"


def machine_ticks() -> int:
    """Busy CPU ticks of the whole machine so far (every process)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return sum(fields) - fields[3] - fields[4]


class Driver:
    """A cluster of ``nodes`` one-CPU nodes on loopback for the checkout at ``code``, and its driver."""

    def __init__(self, label: str, nodes: int, code: Path, files: Path, work: Path, args, ports):
        from refinery.engine.loopback import start_loopback_cluster

        self.label, self.nodes, self.runs, self.freeze = label, nodes, [], args.freeze_idle
        env = {"PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.cluster = start_loopback_cluster(nodes, 1, env=env, worker_ports=ports)
        command = [sys.executable, str(Path(__file__).resolve()), "--serve",
                   "--address", self.cluster.address, "--workers", str(nodes), "--files", str(files),
                   "--work", str(work), "--piece-rows", str(args.piece_rows)]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=code, env={**os.environ, **env, "RAY_AUTH_MODE": "disabled"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )  # fmt: skip

    def groups(self) -> set[int]:
        """The sessions of the cluster's nodes (each ``ray start`` leads one)."""
        return set(self.cluster.pids)

    def signal(self, signum: int) -> None:
        """``signum`` to the driver and every process of the cluster's sessions (workers included)."""
        sessions = self.groups()
        for pid, (session, _, _) in process_ticks().items():
            if pid == self.proc.pid or session in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)

    def run(self, everyone: list[Driver]) -> dict:
        """One run, with where the machine's CPU went meanwhile."""
        others = [d for d in everyone if d is not self]
        if self.freeze:  # the waiting clusters stopped: their Ray processes' CPU is not taken from this run
            for d in others:
                d.signal(signal.SIGSTOP)
        load = os.getloadavg()[0]
        ticks0, busy0 = process_ticks(), machine_ticks()
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"the {self.label} driver exited (code {self.proc.wait()})")
            if line.startswith(RESULT):
                result = json.loads(line[len(RESULT) :])
                break
        ticks1, busy1 = process_ticks(), machine_ticks()
        for d in others if self.freeze else ():
            d.signal(signal.SIGCONT)

        kinds: dict[str, float] = {}

        def cpu(pids_or_sessions, split: bool = False) -> float:
            used = 0
            for pid, (session, t1, name) in ticks1.items():
                if pid in pids_or_sessions or session in pids_or_sessions:
                    ticks = t1 - ticks0.get(pid, (session, 0, name))[1]
                    used += ticks
                    if split:
                        kind = kind_of(pid, name, self.proc.pid)
                        kinds[kind] = kinds.get(kind, 0.0) + ticks / TICK
            return used / TICK

        mine = cpu(self.groups() | {self.proc.pid}, split=True)
        idle = cpu(set().union(*(d.groups() | {d.proc.pid} for d in everyone if d is not self)))
        machine = (busy1 - busy0) / TICK
        wall = result["wall_s"]
        result.update(
            load_start=load,
            cluster_cpu_s=mine,  # the measured cluster's processes and its driver
            overhead_cpu_s=mine - (result["task_cpu_s"] or 0),  # of which not in a task
            cpu_by_kind={
                **{k: round(v, 2) for k, v in sorted(kinds.items())},
                "idle clusters": round(idle, 2),
            },
            idle_clusters_cpu_s=idle,
            others_cores=max(0.0, machine - mine - idle) / wall,  # other jobs' cores while it ran
        )
        self.runs.append(result)
        return result

    def close(self) -> None:
        self.signal(signal.SIGCONT)  # a run that failed may have left it stopped
        try:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
        self.cluster.stop()


def measure_local(files, work: Path, piece_rows: int, repeats: int) -> tuple[dict, object]:
    from refinery.engine.tasks import InProcessTasks

    runs = [one_run(files, InProcessTasks(), 1, work, piece_rows) for _ in range(repeats + 1)]
    table = runs[0].pop("table")
    for r in runs[1:]:
        if not r.pop("table").equals(table):
            raise RuntimeError("the local engine's runs disagree")
    return summary(runs[0], runs[1:], table_digest(table)), table


def summary(first: dict, timed: list[dict], want: str | None) -> dict:
    def med(key):
        values = [r[key] for r in timed if r.get(key) is not None]
        return statistics.median(values) if values else None

    middle = sorted(timed, key=lambda r: r["wall_s"])[len(timed) // 2]
    return {
        "first_s": first["wall_s"],
        "wall_s": med("wall_s"),
        "wall_all": [round(r["wall_s"], 2) for r in timed],
        **{k: med(k) for k in ("work_span_s", "task_cpu_s", "overhead_cpu_s", "others_cores", "load_start")},
        "others_all": [round(r["others_cores"], 2) for r in timed if "others_cores" in r],
        "cpu_by_kind": {
            k: round(statistics.median(r["cpu_by_kind"].get(k, 0.0) for r in timed), 2)
            for k in sorted({k for r in timed for k in r.get("cpu_by_kind", {})})
        },
        "removed": first["removed"],
        "rounds": first["rounds"],
        "steps_s": middle["steps_s"],
        "ray_steps": middle["ray_steps"],
        "losses": middle["losses"],
        "same": want is None or all(r.get("digest", want) == want for r in [first, *timed]),
    }


def render(doc: dict) -> list[str]:
    r = doc["results"]
    lines = [
        f"{doc['date']}; {doc['documents']:,} documents, {doc['text_mb']} MB ({doc['args']}); pieces of "
        f"{doc['piece_rows']:,} rows; {doc['repeats']} rounds after a warm-up run per driver, the clusters' "
        f"runs interleaved (round i: {' → '.join(doc['order'])}, reversed when i is odd). Load before "
        f"`{doc['load_before']}`, after `{doc['load_after']}`. Two busy processes over one, same run: "
        f"{doc['ceiling']['two_over_one']:.2f}x.",
        "",
        "| engine | wall s, median (runs) | warm-up s | sum of work spans s | tasks' CPU s | CPU outside "
        "tasks s | other jobs' cores (runs) | removed | component rounds | same table |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for label, m in r.items():
        lines.append(
            f"| {label} | {m['wall_s']:.2f} ({', '.join(map(str, m['wall_all']))}) | {m['first_s']:.2f} | "
            f"{fmt(m.get('work_span_s'))} | {fmt(m.get('task_cpu_s'))} | {fmt(m.get('overhead_cpu_s'))} | "
            f"{', '.join(map(str, m.get('others_all') or [])) or '–'} | {m['removed']:,} | {m['rounds']} | "
            f"{'yes' if m['same'] else 'NO'} |"
        )
    split = {label: m["cpu_by_kind"] for label, m in r.items() if m.get("cpu_by_kind")}
    if split:
        kinds = sorted({k for v in split.values() for k in v})
        lines += ["", "CPU seconds per run by process (medians; the workers' include their tasks' CPU; "
                  "the idle clusters: the other drivers' clusters, waiting meanwhile):", "",
                  "| engine | " + " | ".join(kinds) + " |", "|---|" + "---:|" * len(kinds)]  # fmt: skip
        for label, v in split.items():
            lines.append(f"| {label} | " + " | ".join(f"{v.get(k, 0.0):.2f}" for k in kinds) + " |")
    lines += ["", "Per round (2 over 1 from the same round's runs):", "",
              "| code | round | order | 1 node s | 2 nodes s | 2 over 1 | loads at start "
              "| other jobs' cores |", "|---|---:|---|---:|---:|---:|---|---|"]  # fmt: skip
    for code, rounds in doc["rounds"].items():
        for x in rounds:
            lines.append(
                f"| {code} | {x['round']} | {x['order']} | {x['one_s']:.2f} | {x['two_s']:.2f} | "
                f"**{x['ratio']:.2f}x** | {x['loads']} | {x['others']} |"
            )
        ratios = [x["ratio"] for x in rounds]
        one, two = r[f"{code}, ray 1 node"], r[f"{code}, ray 2 nodes"]
        lines.append(
            f"| {code} | median | | {one['wall_s']:.2f} | {two['wall_s']:.2f} | "
            f"**{one['wall_s'] / two['wall_s']:.2f}x** (rounds' median {statistics.median(ratios):.2f}x; "
            f"work spans {one['work_span_s'] / two['work_span_s']:.2f}x) | | |"
        )
    for code in doc["rounds"]:
        one, two = r[f"{code}, ray 1 node"], r[f"{code}, ray 2 nodes"]
        lines += ["", f"{code}: per step (the median run), wall s local / 1 node / 2 nodes, the 2 nodes' "
                  "work span, tasks and task CPU:", "",
                  "| step | local s | 1 node s | 2 nodes s | 2 nodes: work span s, tasks, task CPU s |",
                  "|---|---:|---:|---:|---|"]  # fmt: skip
        spans = {s["step"]: s for s in two["ray_steps"]}
        local_steps = r["local"]["steps_s"] if "local" in r else dict.fromkeys(one["steps_s"], float("nan"))
        for step, local_s in local_steps.items():
            s = spans.get(f"{step}_task") or spans.get(step) or {}
            extra = f"{s.get('work_s', '–')}, {s.get('tasks', '–')}, {s.get('task_cpu_s', '–')}" if s else "–"
            lines.append(
                f"| {step} | {local_s:.2f} | {one['steps_s'].get(step, float('nan')):.2f} | "
                f"{two['steps_s'].get(step, float('nan')):.2f} | {extra} |"
            )
        lines += ["", f"{code}: where the 2 nodes' work span goes (the median run): each map's span "
                  "against its tasks' seconds shared evenly over the two workers; idle at the barrier "
                  "(summed over workers) and between one worker's tasks:", "",
                  "| map | tasks | work span s | even share s | idle at the barrier s | between tasks s "
                  "| longest task s |", "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
        for x in two["losses"]:
            lines.append(
                f"| {x['step']} | {x['tasks']} | {x['span_s']:.3f} | {x['even_s']:.3f} | {x['tail_s']:.3f} | "
                f"{x['gaps_s']:.3f} | {x['longest_s']:.3f} |"
            )
    return lines


def fmt(x) -> str:
    return "–" if x is None else f"{x:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--real-mb", type=float, default=105)
    p.add_argument("--generated", type=int, default=300_000)
    p.add_argument("--piece-rows", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3, help="rounds after the warm-up (odd rounds reversed)")
    p.add_argument("--before", type=Path, help="another checkout (the code before), in the same rounds")
    p.add_argument("--worker-ports", default="27000-27999", help="Ray workers' ports, split by cluster")
    p.add_argument(
        "--freeze-idle",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SIGSTOP the waiting clusters (and drivers) during each run; SIGCONT after it",
    )
    p.add_argument("--out", type=Path, default=OUT / "corpus_dedup_scaling.md")
    p.add_argument(
        "--no-local", action="store_true", help="skip the local engine (the Ray runs' tables go unchecked)"
    )
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # a cluster's driver
    p.add_argument("--address", help=argparse.SUPPRESS)
    p.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    p.add_argument("--files", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve:
        serve(args)
        return
    from benchmarks.bench_ray_scaling import machine_ceiling, uptime

    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load_before = uptime()
    ceiling = machine_ceiling()
    codes = [("this code", ROOT)] + ([("before", args.before.resolve())] if args.before else [])
    first_port, last_port = (int(x) for x in args.worker_ports.split("-"))
    share = (last_port - first_port + 1) // (2 * len(codes))
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="corpus-scaling-") as tmp_name:
        tmp = Path(tmp_name)
        files, docs, mb = build_input(tmp, args.real_mb, args.generated)
        listing = tmp / "files.json"
        listing.write_text(json.dumps([(s, str(f)) for s, f in files]))
        print(f"{docs:,} documents, {mb:.1f} MB; load {load_before}", flush=True)
        want = None
        if not args.no_local:
            print("  local", flush=True)
            results["local"], table = measure_local(files, tmp / "work-local", args.piece_rows, args.repeats)
            want = table_digest(table)
            del table
        drivers: list[Driver] = []
        try:
            for c, (code, path) in enumerate(codes):
                for nodes in (1, 2):
                    k = len(drivers)
                    ports = (first_port + k * share, first_port + (k + 1) * share - 1)
                    label = f"{code}, ray {nodes} node{'s' if nodes > 1 else ''}"
                    work = tmp / f"work-{c}-{nodes}"
                    drivers.append(Driver(label, nodes, path, listing, work, args, ports))
            for d in drivers:  # warm-up: workers started, imports and caches loaded
                print(f"  warm-up {d.label}: {d.run(drivers)['wall_s']:.2f} s", flush=True)
            rounds: dict[str, list[dict]] = {code: [] for code, _ in codes}
            for i in range(args.repeats):
                order = drivers if i % 2 == 0 else drivers[::-1]
                for d in order:
                    r = d.run(drivers)
                    print(f"  round {i} {d.label}: {r['wall_s']:.2f} s, span {r['work_span_s']:.2f}, "
                          f"others {r['others_cores']:.2f} cores, load {r['load_start']:.2f}",
                          flush=True)  # fmt: skip
                for c, (code, _) in enumerate(codes):
                    one, two = drivers[2 * c].runs[-1], drivers[2 * c + 1].runs[-1]
                    rounds[code].append({
                        "round": i, "order": "1 → 2" if i % 2 == 0 else "2 → 1",
                        "one_s": one["wall_s"], "two_s": two["wall_s"],
                        "ratio": one["wall_s"] / two["wall_s"],
                        "loads": f"{one['load_start']:.2f} / {two['load_start']:.2f}",
                        "others": f"{one['others_cores']:.2f} / {two['others_cores']:.2f}",
                    })  # fmt: skip
            for d in drivers:
                results[d.label] = summary(d.runs[0], d.runs[1:], want)
        finally:
            for d in drivers:
                d.close()
    order = [d.label.replace(", ray ", " ").replace(" nodes", "").replace(" node", "") for d in drivers]
    doc = {
        "date": date,
        "documents": docs,
        "text_mb": round(mb, 2),
        "piece_rows": args.piece_rows,
        "repeats": args.repeats,
        "args": f"real {args.real_mb:g} MB + {args.generated:,} generated",
        "order": order,
        "load_before": load_before,
        "load_after": uptime(),
        "ceiling": ceiling,
        "results": results,
        "rounds": rounds,
    }
    text = "\n".join(render(doc))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=1, default=float))
    print("\n" + text)


if __name__ == "__main__":
    main()
