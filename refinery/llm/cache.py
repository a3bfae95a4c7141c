"""A persistent cache of chat completions, so a rerun or a resumed step costs no request.

Keyed on everything that decides a completion: the model, the messages and the sampling
parameters (canonical JSON, hashed). Only answers the server gave are stored (HTTP 200 with a
choice, whatever its finish reason); an HTTP failure is not, so a resumed step asks again.

SQLite in WAL mode: many processes (parallel steps, workers of one step) read and write the same
file safely; each answer is committed as soon as it arrives, so a step killed half-way keeps
every answer it had received.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    request TEXT NOT NULL,
    response TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def request_key(model: str, messages: list[dict], params: dict) -> str:
    """The cache key of one request: model, messages and sampling parameters, canonically hashed."""
    canonical = json.dumps(
        {"model": model, "messages": messages, "params": params},
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class RequestCache:
    """Completions by request key in one SQLite file (created with its folder on first use)."""

    def __init__(self, path: str | Path, timeout_s: float = 60.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(SCHEMA)

    def get(self, key: str) -> dict | None:
        row = self._db.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def put(self, key: str, model: str, request: dict, response: dict) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO completions (key, model, request, response, created) "
            "VALUES (?, ?, ?, ?, ?)",
            (key, model, json.dumps(request, ensure_ascii=False), json.dumps(response), time.time()),
        )

    def __len__(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
