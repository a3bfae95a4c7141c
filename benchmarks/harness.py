"""Shared benchmark harness: timing, memory, isolated runs, machine description.

Every component of a benchmark runs alone in a fresh process (multiprocessing "spawn", numeric
libraries pinned to one thread through :data:`SINGLE_THREAD_ENV`) and measures itself with a
:class:`Meter`: CPU seconds (user + system) and wall seconds of the timed sections, documents and
UTF-8 bytes that went through them. "Per core" figures divide by CPU seconds, so they hold on a
busy machine where wall time does not; peak RSS is the process's VmHWM.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from importlib import metadata
from multiprocessing import get_context

import pyarrow as pa
import pyarrow.compute as pc

SINGLE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
    "RAYON_NUM_THREADS": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
NUM_PERM, NGRAM, SEED = 128, 5, 1
TARGET_CHAIN, TARGET_MINHASH = 10.0, 3.0


def proc_status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (VmRSS, VmHWM), 0 where there is none."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


class Meter:
    """CPU and wall seconds spent inside ``timed()``, and what went through it."""

    def __init__(self) -> None:
        self.cpu = self.wall = 0.0
        self.docs = self.bytes = 0

    @contextmanager
    def timed(self):
        c0, w0 = time.process_time(), time.perf_counter()
        try:
            yield
        finally:
            self.cpu += time.process_time() - c0
            self.wall += time.perf_counter() - w0

    def result(self, name: str, rss_setup_kb: int, **extra) -> dict:
        return {
            "name": name,
            "docs": self.docs,
            "bytes": self.bytes,
            "cpu_s": self.cpu,
            "wall_s": self.wall,
            "rss_setup_mb": rss_setup_kb / 1024,
            "peak_rss_mb": proc_status_kb("VmHWM") / 1024,
            **extra,
        }


def batch_bytes(batch: pa.RecordBatch) -> int:
    return int(pc.sum(pc.binary_length(batch.column("text"))).as_py() or 0)


def run_isolated(fn, **kwargs) -> dict:
    """Run one component in a fresh spawned process and return what it measured."""
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        result = pool.submit(fn, **kwargs).result()
    result["process_wall_s"] = time.perf_counter() - started
    return result


def mbps(r: dict) -> float:
    return r["bytes"] / 1e6 / r["cpu_s"] if r["cpu_s"] else float("nan")


def dps(r: dict) -> float:
    return r["docs"] / r["cpu_s"] if r["cpu_s"] else float("nan")


def machine_info(packages: list[str]) -> dict:
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gb = None
    try:
        with open("/proc/meminfo") as fh:
            mem_gb = int(fh.readline().split()[1]) / 1024**2
    except (OSError, ValueError, IndexError):
        pass
    versions = {}
    for pkg in packages:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(os.sched_getaffinity(0)),
        "memory_gb": mem_gb,
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


def run_in_checkout(code, script: str, *args: str) -> dict:
    """``python -c script args`` in a fresh process with the checkout ``code`` first on the path (one
    thread for BLAS and Rayon): the JSON object its last line of output prints, with the load then.
    Two checkouts run this way alternately are the A/B benchmarks' code before and after."""
    env = {**os.environ, "PYTHONPATH": str(code), "OMP_NUM_THREADS": "1", "RAYON_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", script, *args], cwd=code, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise RuntimeError(f"{code}: {done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["load"] = round(os.getloadavg()[0], 2)
    return out
