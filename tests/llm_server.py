"""A real OpenAI-compatible server on loopback for the LLM tests: ``transformers serve`` on the
project's tiny chat model (refinery/llm/tiny_chat_model.py, built by setup; built here if
missing). Its text has no quality: the tests exercise the machinery, not the model."""

from __future__ import annotations

from pathlib import Path

from refinery.llm.local_server import LocalServer, start_transformers_serve
from refinery.llm.tiny_chat_model import build

Served = LocalServer


def start_server(log_dir: Path) -> LocalServer:
    return start_transformers_serve(build(log=lambda line: None), log_dir / "transformers-serve.log")


def stop_server(served: LocalServer) -> None:
    served.stop()
