"""SQLite connections for the local dedup indexes: WAL, full sync, short write transactions.

Every write is one ``BEGIN IMMEDIATE`` transaction (the write lock is taken at the start, so a
transaction never fails half-way on a lock upgrade), kept to one batch of claims or one chunk of
withdrawals, so concurrent runs interleave at batch granularity. WAL mode lets readers run beside
the writer; ``synchronous=FULL`` makes a committed transaction durable against power loss, not just
against a crash of the process, before the claim counts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

BUSY_TIMEOUT_S = 120.0  # waiting for another run's batch, never for a whole partition
PARAM_CHUNK = 900  # bound parameters per statement, below every SQLite build's limit


def connect(path: Path, cache_mb: int = 32) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=True)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(f"PRAGMA cache_size=-{cache_mb * 1024}")
    return db


@contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction: committed on normal exit, rolled back on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def chunks(values: Sequence, size: int = PARAM_CHUNK) -> Iterator[Sequence]:
    for i in range(0, len(values), size):
        yield values[i : i + size]


def placeholders(n: int) -> str:
    return ",".join("?" * n)
