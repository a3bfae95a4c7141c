"""The bookkeeping of refinery.engine.loopback without starting Ray (tests/ray starts the real
cluster): the record another process reads, the health check the shared test cluster relies on
(a node's process gone, a zombie, the head not answering), and a stop that also ends what ignores
SIGTERM, from a process that did not start it."""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from refinery.engine.loopback import LoopbackCluster, start_loopback_cluster


def _session_states(pid: int) -> list[str]:
    """The state of every process of the session ``pid`` leads (the group: one per session here)."""
    done = subprocess.run(["ps", "-o", "stat=", "-s", str(pid)], capture_output=True, text=True)
    return done.stdout.split()


def _node(ignore_term: bool = False) -> subprocess.Popen:
    """A stand-in for ``ray start --block``: its own process group, with a child in it."""
    trap = "trap '' TERM; " if ignore_term else ""
    return subprocess.Popen(["bash", "-c", f"{trap}sleep 60 & wait"], start_new_session=True)


@pytest.fixture
def head():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock


def _cluster(head, procs, tmp_path) -> LoopbackCluster:
    return LoopbackCluster(f"127.0.0.1:{head.getsockname()[1]}", tuple(p.pid for p in procs), str(tmp_path))


def test_the_record_round_trips_through_json(tmp_path):
    cluster = LoopbackCluster("127.0.0.1:6379", (11, 12), str(tmp_path), "http://127.0.0.1:8265")
    assert LoopbackCluster.from_json(cluster.to_json()) == cluster
    assert cluster.port == 6379


def test_alive_until_a_node_exits_or_the_head_stops_answering(head, tmp_path):
    procs = [_node(), _node()]
    cluster = _cluster(head, procs, tmp_path)
    try:
        assert cluster.alive()
        procs[1].kill()
        time.sleep(0.2)  # not waited for: a zombie, dead all the same
        assert not cluster.alive()
    finally:
        cluster.stop(grace=0.5)
    fresh = [_node(), _node()]
    cluster = _cluster(head, fresh, tmp_path)
    try:
        assert cluster.alive()
        head.close()
        assert not cluster.alive()
    finally:
        cluster.stop(grace=0.5)


def test_stop_ends_every_group_from_another_process_and_removes_the_temp_folder(head, tmp_path):
    procs = [_node(), _node(ignore_term=True)]
    temp = tmp_path / "ray-temp"
    temp.mkdir()
    cluster = LoopbackCluster(f"127.0.0.1:{head.getsockname()[1]}", tuple(p.pid for p in procs), str(temp))
    time.sleep(0.3)
    assert all(len(_session_states(p.pid)) == 2 for p in procs)  # bash and its sleep
    stopper = "from refinery.engine.loopback import LoopbackCluster as C; "
    stopper += f"C.from_json({cluster.to_json()!r}).stop(grace=1)"
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", stopper], check=True, timeout=60)
    assert time.monotonic() - started < 8  # the zombies its parent has not reaped yet do not count
    for proc in procs:
        assert proc.wait(timeout=5) is not None
        # the sleeping children went with their group (at most zombies, waiting for a reaper)
        states = _session_states(proc.pid)
        assert all(state.startswith("Z") for state in states), states
    assert not temp.exists()


def test_a_cluster_needs_a_node_and_a_cpu():
    with pytest.raises(ValueError, match="needs a node and a CPU"):
        start_loopback_cluster(nodes=0)
