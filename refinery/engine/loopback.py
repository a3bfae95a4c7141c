"""A Ray cluster of N nodes on 127.0.0.1, for trying the ``ray`` engine on one machine, for the
tests and for the benchmarks.

Each node is a ``ray start --block`` process leading its own process group (``start_new_session``),
so stopping the cluster is killing those groups: nothing else on the machine is touched (``ray
stop`` would stop every Ray cluster of the user). Every port is picked free, the head's included,
so several loopback clusters can run side by side. The cluster is described by a small
JSON-serialisable record (:class:`LoopbackCluster`): a process that did not start it (another
pytest-xdist worker, the controller at the end of the session) can check it and stop it.

    with loopback_cluster(nodes=2, cpus_per_node=1) as cluster:
        engine = RayEngine(address=cluster.address, node_ip_address="127.0.0.1")

Clients on this machine connect with ``RAY_AUTH_MODE=disabled`` (set on the nodes by default: the
cluster listens on loopback only).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

from refinery.tempfiles import pid_alive

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def port_answers(port: int, host: str = LOOPBACK) -> bool:
    try:
        socket.create_connection((host, port), 1).close()
    except OSError:
        return False
    return True


def wait_port(port: int, seconds: float, host: str = LOOPBACK) -> None:
    """Returns once something listens on ``host:port``; ``RuntimeError`` after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not port_answers(port, host):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on {host}:{port} after {seconds}s")
        time.sleep(0.2)


@dataclass(frozen=True)
class LoopbackCluster:
    """A running loopback cluster: the head's address, the ``ray start`` process of each node (head
    first; each leads its own process group), Ray's temp folder, the dashboard (job server) URL."""

    address: str
    pids: tuple[int, ...]
    temp_dir: str
    dashboard_url: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> LoopbackCluster:
        record = json.loads(text)
        return cls(**{**record, "pids": tuple(record["pids"])})

    @property
    def port(self) -> int:
        return int(self.address.rpartition(":")[2])

    def alive(self) -> bool:
        """Every node's ``ray start --block`` still running (it exits when one of its node's Ray
        processes dies) and the head answering. Cheap: no Ray client is started."""
        return all(_running(pid) for pid in self.pids) and port_answers(self.port)

    def stop(self, grace: float = 3.0) -> None:
        """SIGTERM to every node's process group (the head last), SIGKILL to what is left after
        ``grace`` seconds (Ray's own orderly shutdown takes half a minute, for nothing worth keeping
        here); then Ray's temp folder is removed. Works from any process."""
        for pid in reversed(self.pids):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        for signum, seconds in ((signal.SIGKILL, grace), (None, 10.0)):
            deadline = time.monotonic() + seconds
            while any(_group_exists(pid) for pid in self.pids) and time.monotonic() < deadline:
                time.sleep(0.1)
            for pid in self.pids if signum else ():
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signum)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def start_loopback_cluster(
    nodes: int = 2,
    cpus_per_node: int = 1,
    *,
    dashboard: bool = False,
    env: Mapping[str, str] | None = None,
    temp_root: str | Path = "/tmp",
    timeout: float = 180,
    worker_ports: tuple[int, int] | None = None,
) -> LoopbackCluster:
    """Starts a head and ``nodes - 1`` more nodes of ``cpus_per_node`` CPUs on 127.0.0.1 and
    returns once every node has joined. ``dashboard`` starts the dashboard (what Ray's job
    submission talks to) on the head. ``env`` is added to this process's environment for the nodes
    (their workers inherit it: ``PYTHONPATH`` for code the tasks import by reference, test
    switches). Ray's temp folder goes under ``temp_root``: its socket paths must stay short.
    ``worker_ports`` (first, last): the range every node's workers listen in, instead of Ray's
    default 10002-19999 (a machine shared with other jobs that hold ports there)."""
    if nodes < 1 or cpus_per_node < 1:
        raise ValueError(f"a loopback cluster needs a node and a CPU per node, not {nodes} x {cpus_per_node}")
    node_env = {"RAY_AUTH_MODE": "disabled", "RAY_DISABLE_USAGE_STATS": "1", **os.environ, **(env or {})}
    port, dashboard_port = free_port(), free_port()
    temp = Path(temp_root) / f"refinery-ray-{os.getpid()}-{port}"
    common = [
        "--block",
        "--node-ip-address",
        LOOPBACK,
        "--num-cpus",
        str(cpus_per_node),
        "--disable-usage-stats",
    ]
    if worker_ports:
        common += ["--min-worker-port", str(worker_ports[0]), "--max-worker-port", str(worker_ports[1])]
    head = [
        "--head",
        "--port",
        str(port),
        "--ray-client-server-port",
        str(free_port()),
        "--temp-dir",
        str(temp),
    ]
    if dashboard:
        head += [
            "--include-dashboard",
            "true",
            "--dashboard-host",
            LOOPBACK,
            "--dashboard-port",
            str(dashboard_port),
        ]
    else:
        head += ["--include-dashboard", "false"]
    pids: list[int] = []

    def node(*args: str) -> None:
        proc = subprocess.Popen(
            [_ray_cli(), "start", *args, "--dashboard-agent-listen-port", str(free_port()), *common],
            env=node_env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        pids.append(proc.pid)

    cluster = LoopbackCluster(f"{LOOPBACK}:{port}", (), str(temp))
    try:
        node(*head)
        _wait_started(port, pids, timeout)
        for _ in range(nodes - 1):
            node("--address", f"{LOOPBACK}:{port}")
        cluster = LoopbackCluster(
            f"{LOOPBACK}:{port}", tuple(pids), str(temp),
            f"http://{LOOPBACK}:{dashboard_port}" if dashboard else None,
        )  # fmt: skip
        wait_for_nodes(cluster.address, nodes, node_env, timeout)
        if dashboard:
            wait_port(dashboard_port, timeout)
    except BaseException:
        LoopbackCluster(cluster.address, tuple(pids), str(temp)).stop()
        raise
    return cluster


@contextlib.contextmanager
def loopback_cluster(nodes: int = 2, cpus_per_node: int = 1, **options) -> Iterator[LoopbackCluster]:
    """:func:`start_loopback_cluster`, stopped on exit."""
    cluster = start_loopback_cluster(nodes, cpus_per_node, **options)
    try:
        yield cluster
    finally:
        cluster.stop()


def wait_for_nodes(
    address: str, count: int, env: Mapping[str, str] | None = None, timeout: float = 180
) -> None:
    """Returns once ``count`` nodes of the cluster at ``address`` are alive, asked from a separate
    process (this one stays unattached to Ray: it may attach later with its own options)."""
    probe = (
        "import ray, time\n"
        f"ray.init(address={address!r}, _node_ip_address={LOOPBACK!r}, log_to_driver=False)\n"
        f"deadline = time.time() + {timeout}\n"
        f"while len([n for n in ray.nodes() if n['Alive']]) < {count} and time.time() < deadline:\n"
        "    time.sleep(0.2)\n"
        f"alive = len([n for n in ray.nodes() if n['Alive']])\n"
        f"assert alive >= {count}, f'{{alive}} of {count} nodes alive after {timeout}s'\n"
    )
    probe_env = {"RAY_AUTH_MODE": "disabled", **os.environ, **(env or {})}
    done = subprocess.run(
        [sys.executable, "-c", probe], env=probe_env, timeout=2 * timeout, capture_output=True, text=True
    )
    if done.returncode:
        raise RuntimeError(f"the loopback cluster at {address} did not come up: {done.stderr[-2000:]}")


def _wait_started(port: int, pids: list[int], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not port_answers(port):
        if not _running(pids[0]):
            raise RuntimeError(f"`ray start --head` on port {port} exited before listening")
        if time.monotonic() > deadline:
            raise RuntimeError(f"the Ray head did not listen on {LOOPBACK}:{port} after {timeout}s")
        time.sleep(0.2)


def _ray_cli() -> str:
    beside = Path(sys.executable).parent / "ray"
    return str(beside) if beside.exists() else (shutil.which("ray") or "ray")


def _stat(pid: int | str) -> list[str] | None:
    """``/proc/<pid>/stat`` after the command name: state, parent, process group, ...; None when
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except (FileNotFoundError, ProcessLookupError):
        return None


def _running(pid: int) -> bool:
    """The process exists and is not a zombie (one that exited but was not waited for yet)."""
    if not Path("/proc/self/stat").exists():  # no procfs: a signal tells whether it exists
        return _reap(pid) is None and pid_alive(pid)
    stat = _stat(pid)
    return stat is not None and stat[0] not in ("Z", "X")


def _group_exists(pgid: int) -> bool:
    """A process of the group is still running (zombies, which wait for a parent that may be
    another process, do not count)."""
    _reap(pgid)
    if not Path("/proc/self/stat").exists():
        return pid_alive(-pgid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            stat = _stat(entry.name)
            if stat is not None and stat[2] == str(pgid) and stat[0] not in ("Z", "X"):
                return True
    return False


def _reap(pid: int) -> int | None:
    """Waits for ``pid`` without blocking when it is this process's child; its exit status or None."""
    try:
        waited, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    return status if waited else None
