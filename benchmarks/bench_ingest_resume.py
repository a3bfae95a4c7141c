"""A retried ingest on Ray after a failure halfway: what the retry reads and how long it takes, against
a clean run, with this code and with the code before (which reads every piece again).

The real corpus (:mod:`benchmarks.real_corpus`: Debian docs, man pages, CPython docstrings),
``--copies`` times, is written once as an inbox source of ``--files`` JSONL files
(:func:`benchmarks.bench_ingest_tasks.write_inbox`), cut in ``--split-mb`` ranges. A Ray head of
``--cpus`` CPUs is started by hand on 127.0.0.1 with this helper's ports (GCS ``--port``, workers
26000–26999). Then, ``--repeats`` times, alternately for each code tree (this one, ``--before``), a
driver process of its own (its Ray workers import the same tree: ``runtime_env`` ``PYTHONPATH``)
ingests the source through :func:`refinery.kernel.ingest_tasks.ingest_in_tasks` on Ray tasks:

1. a warm-up run (the job's workers start and import);
2. ``clean``: one attempt, timed;
3. ``failed``: an attempt whose read map stops with a ``ConnectionError`` after half the pieces
   (the first half of the largest-first order) are read;
4. ``retry``: the same call again on the same storage root, timed; the pieces it reads are counted
   from the runner's step log (``read_piece`` tasks).

The retry's output (every column of the kept and quarantine rows) is checked equal to the clean
run's. Medians over the repeats; each repeat's figures are in ``benchmarks/out/ingest_resume.json``
with ``uptime`` before and after.

    python -m benchmarks.bench_ingest_resume --before /tmp/ingest-old --max-mb 16 --copies 4 \\
        --files 4 --split-mb 4 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()
ROOT = HERE.parents[1]
OUT = ROOT / "benchmarks" / "out"
PORTS = {  # this helper's range: GCS 16000–16999, workers 26000–26999
    "--port": 16379,
    "--node-manager-port": 16380,
    "--object-manager-port": 16381,
    "--ray-client-server-port": 16382,
    "--dashboard-agent-listen-port": 16383,
    "--dashboard-agent-grpc-port": 16384,
    "--metrics-export-port": 16385,
    "--runtime-env-agent-port": 16386,
    "--min-worker-port": 26000,
    "--max-worker-port": 26999,
}


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


# -- the driver of one tree (a process of its own: its imports come from that tree) ---------------
def child(args: argparse.Namespace) -> None:
    import pandas as pd
    import ray

    import refinery
    from refinery.engine.tasks import RayTasks
    from refinery.ingest.text_reader import IngestParams, SourceReader
    from refinery.kernel.ingest_tasks import ingest_in_tasks
    from refinery.storage import Storage

    @dataclass
    class HaltingTasks(RayTasks):
        """Ray tasks whose read map stops with a ConnectionError after its first ``read_first`` tasks."""

        read_first: int = -1

        def map(self, fn, args):
            if getattr(fn, "__name__", "") == "read_piece" and self.read_first >= 0:
                super().map(fn, args[: self.read_first])
                raise ConnectionError("benchmark: the step failed halfway through the read")
            return super().map(fn, args)

    tree = Path(args.tree)
    assert Path(refinery.__file__).resolve().is_relative_to(tree.resolve()), refinery.__file__
    env = {"PYTHONPATH": str(tree), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    ray.init(address=args.address, runtime_env={"env_vars": env}, log_to_driver=False)
    where = ray.get(ray.remote(lambda: __import__("refinery").__file__).remote())
    assert Path(where).resolve().is_relative_to(tree.resolve()), where  # the workers import the same tree
    params = IngestParams(split_bytes=int(args.split_mb * 2**20))
    folder, work = Path(args.inbox), Path(args.work)

    def ingest(root: Path, runner) -> float:
        reader = SourceReader(folder, "bench", params)
        started = time.perf_counter()
        ingest_in_tasks(reader, Storage(root), "raw", {}, runner, args.cpus, params.split_bytes, params)
        return time.perf_counter() - started

    def reads(runner) -> int:
        return sum(s.get("tasks", 0) for s in runner.steps if s["step"] == "read_piece")

    result: dict = {"tree": str(tree)}
    try:
        ingest(work / "warm", RayTasks())
        clean = RayTasks()
        result["clean_s"] = ingest(work / "clean", clean)
        result["pieces"] = reads(clean)
        failing = HaltingTasks(read_first=result["pieces"] // 2)
        started = time.perf_counter()
        try:
            ingest(work / "retried", failing)
        except ConnectionError:
            result["failed_s"] = time.perf_counter() - started
        else:
            raise AssertionError("the halting runner did not stop the read")
        result["read_before_failure"] = reads(failing)
        retry = RayTasks()
        result["retry_s"] = ingest(work / "retried", retry)
        result["read_in_retry"] = reads(retry)
        for rejected in (False, True):
            pd.testing.assert_frame_equal(
                Storage(work / "retried").read("raw", "bench", rejected=rejected),
                Storage(work / "clean").read("raw", "bench", rejected=rejected),
            )
        result["rows"] = Storage(work / "clean").row_count("raw", "bench")
    finally:
        ray.shutdown()
    print("RESULT " + json.dumps(result))


# -- the orchestration -----------------------------------------------------------------------------
def start_head(cpus: int, temp: Path) -> subprocess.Popen:
    ray_bin = Path(sys.executable).parent / "ray"
    command = [str(ray_bin), "start", "--head", "--block", "--node-ip-address", "127.0.0.1"]
    command += ["--num-cpus", str(cpus), "--include-dashboard", "false", "--disable-usage-stats"]
    command += ["--temp-dir", str(temp)]
    for flag, port in PORTS.items():
        command += [flag, str(port)]
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_DISABLE_USAGE_STATS": "1"}
    head = subprocess.Popen(command, env=env, start_new_session=True, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while True:  # up when a driver can connect
        probe = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import ray; ray.init(address='127.0.0.1:{PORTS['--port']}'); ray.shutdown()",
            ],
            capture_output=True,
            env=env,
        )
        if probe.returncode == 0:
            return head
        if time.monotonic() > deadline or head.poll() is not None:
            stop_head(head, temp)
            raise RuntimeError(f"the Ray head did not start: {probe.stderr.decode()[-2000:]}")
        time.sleep(2)


def stop_head(head: subprocess.Popen, temp: Path) -> None:
    """Stop the head's processes: its process group (ours: started in a session of its own), then
    any process left whose command line names its temp folder (unique to this run). SIGKILL: on
    SIGTERM Ray drains the node for 30 s after its GCS is already gone."""
    if head.poll() is None:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(temp) in cmdline and int(proc.name) != os.getpid():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", help="the code before: a worktree of main at its commit")
    parser.add_argument("--max-mb", type=float, default=16)
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--files", type=int, default=4)
    parser.add_argument("--split-mb", type=float, default=4)
    parser.add_argument("--cpus", type=int, default=2, help="the Ray head's CPUs (one worker each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--tree", help=argparse.SUPPRESS)
    parser.add_argument("--inbox", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from benchmarks.bench_ingest_tasks import write_inbox

    trees = {"this code": ROOT, **({"code before": Path(args.before)} if args.before else {})}
    result: dict = {"load_before": load(), "runs": []}
    with tempfile.TemporaryDirectory(prefix="ingest-resume-") as tmp_name:
        tmp = Path(tmp_name)
        folder = tmp / "inbox" / "bench"
        size = write_inbox(folder, args.max_mb, args.files, args.copies)
        temp = Path("/tmp") / f"ri-{os.getpid()}"  # Ray's socket paths must stay short
        head = start_head(args.cpus, temp)
        try:
            for repeat in range(args.repeats):
                for name, tree in trees.items():  # alternately, on the same head
                    work = tmp / f"work-{repeat}-{name.replace(' ', '-')}"
                    command = [
                        sys.executable,
                        str(HERE),
                        "--child",
                        "--tree",
                        str(tree),
                        "--inbox",
                        str(folder),
                    ]
                    command += ["--work", str(work), "--address", f"127.0.0.1:{PORTS['--port']}"]
                    command += ["--split-mb", str(args.split_mb), "--cpus", str(args.cpus)]
                    env = {
                        **os.environ,
                        "PYTHONPATH": str(tree),
                        "OMP_NUM_THREADS": "1",
                        "RAY_AUTH_MODE": "disabled",
                    }
                    done = subprocess.run(command, env=env, capture_output=True, text=True, cwd=tree)
                    line = [x for x in done.stdout.splitlines() if x.startswith("RESULT ")]
                    if done.returncode or not line:
                        raise RuntimeError(f"{name}: {done.stderr[-3000:]}")
                    run = {"code": name, "repeat": repeat, "load": load(), **json.loads(line[0][7:])}
                    result["runs"].append(run)
                    print(json.dumps(run), flush=True)
        finally:
            stop_head(head, temp)
            shutil.rmtree(temp, ignore_errors=True)
    result.update(load_after=load(), inbox_mb=round(size / 1e6, 2), files=args.files, copies=args.copies)
    result.update(split_mb=args.split_mb, cpus=args.cpus, repeats=args.repeats)
    mb = size / 1e6
    rows = []
    for name in trees:
        runs = [r for r in result["runs"] if r["code"] == name]
        median = {k: statistics.median(r[k] for r in runs) for k in ("clean_s", "failed_s", "retry_s")}
        reads = sorted({(r["pieces"], r["read_before_failure"], r["read_in_retry"]) for r in runs})
        rows.append((name, median, reads))
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "ingest_resume.json").write_text(json.dumps(result, indent=1))
    print(
        f"\n{mb:.1f} MB of JSONL in {args.files} files, {args.split_mb} MB ranges, "
        f"a Ray head of {args.cpus} CPUs"
    )
    print(f"load before: {result['load_before']}\nload after:  {result['load_after']}\n")
    print(
        "| code | pieces | read before the failure | read by the retry | clean run s | failed attempt s "
        "| retry s | retry / clean | failed + retry s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, m, reads in rows:
        pieces, before, again = (", ".join(str(x[i]) for x in reads) for i in range(3))
        print(
            f"| {name} | {pieces} | {before} | {again} | {m['clean_s']:.2f} | {m['failed_s']:.2f} | "
            f"{m['retry_s']:.2f} | {m['retry_s'] / m['clean_s']:.2f} | {m['failed_s'] + m['retry_s']:.2f} |"
        )


if __name__ == "__main__":
    main()
