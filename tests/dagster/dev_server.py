"""A real ``dagster dev`` (webserver and daemon) on loopback against a temporary instance, and the
GraphQL calls the tests make to it, as a user's browser would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
LOCATION = "definitions"  # `dagster dev -m definitions` names its code location after the module
REPOSITORY = "__repository__"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class DevServer:
    def __init__(self, port: int, log: Path):
        self.port, self.log = port, log

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            json.dumps({"query": query, "variables": variables or {}}).encode(),
            {"Content-Type": "application/json"},
        )
        body = json.load(urllib.request.urlopen(request, timeout=timeout))
        if body.get("errors"):
            raise RuntimeError(f"GraphQL errors: {body['errors']}")
        return body["data"]

    def wait_loaded(self, seconds: float = 180) -> dict:
        query = (
            "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus locationOrLoadError "
            "{ __typename ... on PythonError { message } } } } } }"
        )
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                entry = self.graphql(query, timeout=5)["workspaceOrError"]["locationEntries"][0]
                if entry["loadStatus"] == "LOADED":
                    error = entry["locationOrLoadError"]
                    if error["__typename"] != "RepositoryLocation":
                        raise RuntimeError(f"code location failed to load: {error}")
                    return entry
            except OSError:
                pass
            time.sleep(1)
        raise TimeoutError(f"dagster dev did not load in {seconds}s:\n{self.log.read_text()[-3000:]}")

    def start_sensor(self, name: str) -> str:
        mutation = (
            "mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) { __typename "
            "... on Sensor { sensorState { status } } ... on PythonError { message } "
            "... on SensorNotFoundError { message } ... on UnauthorizedError { message } } }"
        )
        selector = {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY, "sensorName": name}
        result = self.graphql(mutation, {"s": selector})["startSensor"]
        if result["__typename"] != "Sensor":
            raise RuntimeError(f"could not start {name}: {result}")
        return result["sensorState"]["status"]


@contextmanager
def dagster_dev(env: dict, log: Path, *args: str) -> Iterator[DevServer]:
    """``dagster dev -m definitions`` in its own process group, stopped (all of it) at the end."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen(
            [str(BIN / "dagster"), "dev", "-m", "definitions", "-p", str(port), "-h", "127.0.0.1", *args],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        server = DevServer(port, log)
        server.wait_loaded()
        yield server
    finally:
        stop_process_group(proc)


# How long a stopping ``dagster dev`` gets before its whole process group is killed. Idle, it stops
# in about 3 s; after the daemon test's runs it sat out the full minute (dagster dev's own wait for
# its webserver), a minute of suite time spent on a shutdown that no test asserts anything about.
STOP_GRACE_S = 10


def stop_process_group(proc: subprocess.Popen, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM to ``proc``'s process group (dagster dev, its webserver, daemon, code server and the
    runs they launched), then SIGKILL to the group if it is not gone within ``grace_s``."""
    os.killpg(proc.pid, signal.SIGTERM)
    with suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace_s)
    with suppress(ProcessLookupError):  # children that outlive the leader (a run, the code server) go too
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
