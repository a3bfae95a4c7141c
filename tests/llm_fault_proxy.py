"""A fault-injecting HTTP proxy on loopback, in front of the real LLM test server.

The llm resource's failure handling (``api_key_env``, ``timeout_s``, ``max_retries``,
``backoff_s``) only shows against a server that misbehaves, which ``transformers serve`` does not
do on demand. This proxy is a real HTTP server: the client under test talks to it over a socket
exactly as to any endpoint. It records every request it receives (when, which request body,
which ``Authorization`` header) and, per distinct request body, plays a script of faults for its
first attempts before forwarding the request to the real server and relaying the real answer:

- ``"503"`` (or any status code as a string): answer that status at once, no ``Retry-After``;
- ``"stall"``: accept the request and answer nothing for ``HOLD_S``, then drop the connection;
- ``"trickle"``: send a 200 status and headers at once, then one byte of the body every 0.1 s for
  ``HOLD_S`` and drop the connection (a server that is alive but never finishes: only a deadline
  on the whole answer ends it before then).

A client without a working timeout sees the fault end after ``HOLD_S`` and retries: a test then
fails on the time between the attempts instead of hanging.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

HOLD_S = 5.0


@dataclass(frozen=True)
class Seen:
    at: float  # time.monotonic() when the request arrived
    body_key: str  # sha256 of the request body: one key per distinct request
    attempt: int  # 0 for the first time this body arrived
    authorization: str | None
    fault: str | None  # what the proxy did instead of forwarding (None: forwarded)


class FaultProxy:
    def __init__(self, upstream_base_url: str):
        self.upstream = upstream_base_url.rstrip("/").removesuffix("/v1")
        self.faults: list[str] = []
        self.seen: list[Seen] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                answer = httpx.get(proxy.upstream + self.path, timeout=30)
                self._relay(answer.status_code, answer.content)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                fault = proxy._record(body, self.headers.get("Authorization"))
                if fault == "stall":
                    proxy._stopping.wait(HOLD_S)
                    self.close_connection = True
                    return
                if fault == "trickle":
                    self._trickle()
                    return
                if fault is not None:
                    self._relay(int(fault), b'{"error": {"message": "injected fault"}}')
                    return
                answer = httpx.post(
                    proxy.upstream + self.path,
                    content=body,
                    headers={"Content-Type": "application/json"},
                    timeout=120,
                )
                self._relay(answer.status_code, answer.content)

            def _relay(self, status: int, content: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                self.close_connection = True
                until = time.monotonic() + HOLD_S
                try:
                    while time.monotonic() < until and not proxy._stopping.wait(0.1):
                        self.wfile.write(b" ")
                        self.wfile.flush()
                except OSError:  # the client gave up: what the test expects
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def script(self, *faults: str) -> None:
        """Play ``faults`` on the first attempts of every distinct request from now on."""
        with self._lock:
            self.faults = list(faults)
            self._counts.clear()
            self.seen.clear()

    def attempts(self) -> dict[str, list[Seen]]:
        """Every request received since the last script, by request body, in arrival order."""
        with self._lock:
            out: dict[str, list[Seen]] = {}
            for seen in self.seen:
                out.setdefault(seen.body_key, []).append(seen)
            return out

    def _record(self, body: bytes, authorization: str | None) -> str | None:
        key = hashlib.sha256(body).hexdigest()
        with self._lock:
            attempt = self._counts.get(key, 0)
            self._counts[key] = attempt + 1
            fault = self.faults[attempt] if attempt < len(self.faults) else None
            self.seen.append(Seen(time.monotonic(), key, attempt, authorization, fault))
        return fault

    def stop(self) -> None:
        self._stopping.set()
        self.server.shutdown()
        self.server.server_close()
