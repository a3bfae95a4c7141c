"""A real OpenAI-compatible server on loopback for the LLM tests: ``transformers serve`` on the
project's tiny chat model (refinery/llm/tiny_chat_model.py, built by setup; built here if
missing). Its text has no quality: the tests exercise the machinery, not the model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from refinery.llm.tiny_chat_model import build


@dataclass(frozen=True)
class Served:
    base_url: str
    model: str
    process: subprocess.Popen


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(log_dir: Path, timeout_s: float = 180.0) -> Served:
    model = str(build(log=lambda line: None))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    binary = Path(sys.executable).with_name("transformers")
    log = (log_dir / "transformers-serve.log").open("wb")
    process = subprocess.Popen(
        [str(binary), "serve", model, "--host", "127.0.0.1", "--port", str(port), "--device", "cpu"],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"transformers serve exited ({process.returncode}); see {log.name}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                return Served(f"http://127.0.0.1:{port}/v1", model, process)
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"transformers serve did not answer within {timeout_s}s")


def stop_server(served: Served) -> None:
    served.process.terminate()
    try:
        served.process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        served.process.kill()
