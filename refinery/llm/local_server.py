"""Starting ``transformers serve`` on a local model folder, bound to loopback, for the tests and
the benchmark (and for anyone who wants an endpoint from a model already on disk). Nothing is
downloaded: ``HF_HUB_OFFLINE=1``."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx


@dataclass(frozen=True)
class LocalServer:
    base_url: str  # http://127.0.0.1:<port>/v1
    model: str  # the folder, which is also the model name requests carry
    process: subprocess.Popen

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_transformers_serve(
    model_dir: str | Path, log_path: str | Path, timeout_s: float = 180.0, extra_args: tuple[str, ...] = ()
) -> LocalServer:
    """``transformers serve <model_dir>`` on a free loopback port, once ``/health`` answers."""
    model = str(model_dir)
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("OMP_NUM_THREADS", "1")
    binary = Path(sys.executable).with_name("transformers")
    command = [str(binary), "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"]
    with Path(log_path).open("wb") as log:
        process = subprocess.Popen([*command, *extra_args], stdout=log, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited with {process.returncode}; see {log_path}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return LocalServer(f"http://127.0.0.1:{port}/v1", model, process)
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"transformers serve did not answer within {timeout_s}s; see {log_path}")
