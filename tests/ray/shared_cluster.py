"""One two-node Ray loopback cluster for the whole test session, shared by the pytest-xdist workers.

A cluster costs tens of seconds to start on two cores, and each Ray test file used to start its
own (two at once under two workers). Now the first test that asks for ``ray_cluster`` starts it
(:mod:`refinery.engine.loopback`: one CPU per node, the dashboard on the head for the Ray job test)
and records it in the session folder; later tests, in any worker, reuse it. The controller (or the
only process, with ``-n 0``) stops it when the session ends.

The cluster is used by one test at a time (a lock held for the test's duration): the tests count
nodes and actors, and kill workers on purpose. Before each test the fixture checks the cluster
(every node's process alive, the head answering) and starts a new one if a test broke it; the
markers folder (``$REFINERY_TEST_MARKERS`` on every node, for the fault-injection helpers) is
emptied. After each test, a Ray connection the test left in this process is closed, so its
actors free their CPUs.

Registered for every test by ``pytest_plugins`` in tests/conftest.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from refinery.engine.loopback import LoopbackCluster, start_loopback_cluster

ROOT = Path(__file__).resolve().parents[2]
SESSION_ENV = "REFINERY_TEST_SESSION_DIR"  # set by the controller, inherited by the xdist workers
OWNER_ENV = "REFINERY_TEST_SESSION_OWNER"  # the process that made it, and stops the cluster
MARKERS_ENV = "REFINERY_TEST_MARKERS"
NODES, CPUS_PER_NODE = 2, 1


def session_dir() -> Path:
    """The session's folder: made by the controller (or the only process), inherited by the xdist
    workers through the environment; its maker stops the cluster at the end."""
    if not os.environ.get(SESSION_ENV):  # a worker whose controller did not load this plugin
        _make_session_dir()
    return Path(os.environ[SESSION_ENV])


def _make_session_dir() -> None:
    os.environ[SESSION_ENV] = tempfile.mkdtemp(prefix="refinery-tests-")
    os.environ[OWNER_ENV] = str(os.getpid())


def markers_dir() -> Path:
    return session_dir() / "markers"


def _record() -> Path:
    return session_dir() / "ray-cluster.json"


@contextlib.contextmanager
def _exclusive() -> Iterator[None]:
    """The session's Ray lock, across processes: one test (and one start) at a time."""
    with open(session_dir() / "ray.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _recorded() -> LoopbackCluster | None:
    record = _record()
    return LoopbackCluster.from_json(record.read_text()) if record.exists() else None


def _running_cluster() -> LoopbackCluster:
    """The recorded cluster if it is healthy, else a new one (the broken one stopped first).
    Called with the lock held."""
    cluster = _recorded()
    if cluster is not None and cluster.alive():
        return cluster
    if cluster is not None:
        cluster.stop()
    markers_dir().mkdir(exist_ok=True)
    env = {"PYTHONPATH": str(ROOT), MARKERS_ENV: str(markers_dir())}
    cluster = start_loopback_cluster(NODES, CPUS_PER_NODE, dashboard=True, env=env)
    _record().write_text(cluster.to_json())
    return cluster


def _empty_markers() -> None:
    folder = markers_dir()
    for path in (folder, folder.parent / f"{folder.name}-dedup-kills"):  # see tests/ray/dedup_faults.py
        shutil.rmtree(path, ignore_errors=True)
    folder.mkdir()


def _disconnect() -> None:
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        ray.shutdown()


@contextlib.contextmanager
def _using_cluster() -> Iterator[LoopbackCluster]:
    with _exclusive():
        cluster = _running_cluster()
        _empty_markers()
        try:
            yield cluster
        finally:
            _disconnect()


@pytest.fixture
def ray_cluster() -> Iterator[tuple[str, Path]]:
    """The session's two-node cluster (one CPU per node, on 127.0.0.1), this test its only user:
    (head address, markers folder: ``$REFINERY_TEST_MARKERS`` on every node, empty now)."""
    with _using_cluster() as cluster:
        yield cluster.address, markers_dir()


@pytest.fixture
def ray_job_cluster() -> Iterator[str]:
    """The same cluster, for Ray job submission: its dashboard's URL (the job server)."""
    with _using_cluster() as cluster:
        yield cluster.dashboard_url


CLUSTER_FIXTURES = frozenset({"ray_cluster", "ray_job_cluster"})
# Files whose tests take one of these session fixtures run on one worker, one after the other, as a
# single unit of work: the Ray files, so the two workers never wait on the cluster's lock; the LLM
# files, so one ``transformers serve`` (tests/dagster/conftest.py's ``llm_server``) serves them all
# instead of one per file.
SHARED_UNITS = {"shared Ray cluster": CLUSTER_FIXTURES, "shared LLM server": frozenset({"llm_server"})}


def _unit_files_record() -> Path:
    return session_dir() / "unit-files.json"


def pytest_collection_modifyitems(config, items) -> None:
    """Records which files have a test on each shared fixture of :data:`SHARED_UNITS` (each worker
    collects the same), for the controller's scheduler below."""
    files = {
        item.nodeid.split("::")[0]: unit
        for item in items
        for unit, fixtures in SHARED_UNITS.items()
        if fixtures & _fixtures(item)
    }
    record = _unit_files_record()
    partial = record.with_name(f"{record.name}.{os.getpid()}")
    partial.write_text(json.dumps(files, sort_keys=True))
    partial.replace(record)


def _fixtures(item) -> set[str]:
    return set(getattr(item, "fixturenames", ()))


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown without xdist (-p no:xdist)
def pytest_xdist_make_scheduler(config, log):
    """Under ``--dist loadfile`` (scripts/test.sh): every file a unit of work, as before, except
    the files of each shared unit (:data:`SHARED_UNITS`), which are one unit: one worker runs them
    one after the other while the other runs the rest."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class SharedFixturesTogether(LoadFileScheduling):
        unit_of: dict[str, str] | None = None  # file -> unit, read once every worker has collected

        def _split_scope(self, nodeid: str) -> str:
            path = super()._split_scope(nodeid)
            if self.unit_of is None:
                record = _unit_files_record()
                self.unit_of = json.loads(record.read_text()) if record.exists() else {}
            return self.unit_of.get(path, path)

    return SharedFixturesTogether(config, log)


def pytest_configure(config) -> None:
    if not hasattr(config, "workerinput"):  # the controller, or the only process
        _make_session_dir()


def pytest_unconfigure(config) -> None:
    if os.environ.get(OWNER_ENV) != str(os.getpid()) or not os.environ.get(SESSION_ENV):
        return
    with _exclusive():
        cluster = _recorded()
        if cluster is not None:
            cluster.stop()
    shutil.rmtree(session_dir(), ignore_errors=True)
