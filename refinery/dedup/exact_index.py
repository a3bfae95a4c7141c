"""The persistent exact-duplicate index: content hash -> the document that claimed it first.

First come, first served across partitions: a partition's documents are checked against every
claim made by partitions materialized before it, and claim what is new. Re-materializing a
partition first withdraws all of its own claims, then claims again, so its contribution is
replaced, never counted twice, and unchanged input gets back exactly the same claims.
Claims withdrawn and not renewed (documents that left the partition) are reported, because
another partition may have dropped a copy in their favour and should be re-run.

Two backends with one interface: SQLite in the home folder (default, one machine), and Redis
(several machines sharing one index).
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from pathlib import Path

from refinery.dedup.keys import doc_key


class ExactIndex(ABC):
    @abstractmethod
    def begin(self, source: str) -> None:
        """Withdraw the source's previous claims (inside the transaction that commit ends)."""

    @abstractmethod
    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        """Current claims among ``hashes``: hash -> claiming document key."""

    @abstractmethod
    def claim(self, source: str, items: list[tuple[bytes, str]]) -> None:
        """Record (hash, doc id) claims for the source."""

    @abstractmethod
    def commit(self) -> list[str]:
        """Make the partition's new claims durable; return keys whose claim was withdrawn."""

    @abstractmethod
    def abort(self) -> None: ...

    @abstractmethod
    def count(self) -> int: ...

    @abstractmethod
    def close(self) -> None: ...


class SqliteExactIndex(ExactIndex):
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=120, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS claims "
            "(hash BLOB PRIMARY KEY, source TEXT NOT NULL, doc_id TEXT NOT NULL) WITHOUT ROWID"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS claims_source ON claims(source)")
        self._source: str | None = None
        self._withdrawn: dict[bytes, str] = {}

    def begin(self, source: str) -> None:
        self._db.execute("BEGIN IMMEDIATE")
        self._source = source
        self._withdrawn = dict(
            self._db.execute("SELECT hash, doc_id FROM claims WHERE source = ?", (source,)).fetchall()
        )
        self._db.execute("DELETE FROM claims WHERE source = ?", (source,))

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        for i in range(0, len(hashes), 900):  # SQLite's bound-parameter limit
            chunk = hashes[i : i + 900]
            rows = self._db.execute(
                f"SELECT hash, source, doc_id FROM claims WHERE hash IN ({','.join('?' * len(chunk))})", chunk
            )
            found.update({h: doc_key(s, d) for h, s, d in rows})
        return found

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> None:
        self._db.executemany("INSERT INTO claims VALUES (?, ?, ?)", [(h, source, d) for h, d in items])
        for h, d in items:
            if self._withdrawn.get(h) == d:
                del self._withdrawn[h]

    def commit(self) -> list[str]:
        self._db.execute("COMMIT")
        gone = sorted(doc_key(self._source or "", d) for d in self._withdrawn.values())
        self._withdrawn = {}
        return gone

    def abort(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]

    def close(self) -> None:
        self.abort()
        self._db.close()


class RedisExactIndex(ExactIndex):
    """Claims in a Redis hash, each source's hashes in a Redis set (for withdrawal)."""

    def __init__(self, client, namespace: str):
        self._r = client
        self._claims = f"{namespace}:exact:claims"
        self._members = f"{namespace}:exact:members:"
        self._source: str | None = None
        self._withdrawn: dict[bytes, str] = {}
        self._new: list[tuple[bytes, str]] = []

    def begin(self, source: str) -> None:
        self._source = source
        members = list(self._r.smembers(self._members + source))
        owners = self._r.hmget(self._claims, members) if members else []
        self._withdrawn = {h: o.decode().partition("/")[2] for h, o in zip(members, owners, strict=True) if o}
        pipe = self._r.pipeline()
        if members:
            pipe.hdel(self._claims, *members)
        pipe.delete(self._members + source)
        pipe.execute()

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        if not hashes:
            return {}
        values = self._r.hmget(self._claims, hashes)
        return {h: v.decode() for h, v in zip(hashes, values, strict=True) if v is not None}

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> None:
        if not items:
            return
        pipe = self._r.pipeline()
        pipe.hset(self._claims, mapping={h: doc_key(source, d) for h, d in items})
        pipe.sadd(self._members + source, *[h for h, _ in items])
        pipe.execute()
        for h, d in items:
            if self._withdrawn.get(h) == d:
                del self._withdrawn[h]

    def commit(self) -> list[str]:
        gone = sorted(doc_key(self._source or "", d) for d in self._withdrawn.values())
        self._withdrawn = {}
        return gone

    def abort(self) -> None:
        """Redis has no partition-long transaction; a failed run leaves partial claims that
        the next materialization of the same partition withdraws in :meth:`begin`."""

    def count(self) -> int:
        return int(self._r.hlen(self._claims))

    def close(self) -> None:
        self._r.close()
