"""The persistent exact-duplicate index: content hash -> the document that claimed it first.

A batch's claims are one atomic step: SQLite ``INSERT OR IGNORE`` then reading the owners back,
inside one ``BEGIN IMMEDIATE`` transaction; Redis ``HSETNX`` per hash inside one Lua script that
also records the hash in the source's membership set. Whoever inserts a hash first owns it, so two
concurrent claimants can never both keep the same content. See :mod:`refinery.dedup.claims` for
the rule and the run's life cycle (withdraw on enter, report on commit, withdraw on abort).

Two backends with one interface: SQLite in the home folder (default, one machine), and Redis
(several machines sharing one index; keys ``{namespace}:exact:…``).
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path

from refinery.dedup.claims import ClaimIndex, ClaimRun
from refinery.dedup.errors import format_error
from refinery.dedup.keys import legacy_redis_prefix, redis_prefix
from refinery.dedup.sqlite_store import chunks, connect, immediate, placeholders
from refinery.ids import doc_key

WITHDRAW_CHUNK = 20_000  # claims removed per transaction / script call
REDIS_FORMAT = "2"


class ExactRun(ClaimRun[bytes]):
    """One partition's claims on the exact index."""

    index: ExactIndex

    def claim(self, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        """Claim (hash, doc id) pairs with distinct hashes; returns hash -> owner key for every
        hash, which is this source's document exactly where the claim was won."""
        owners = self.index.claim(self.source, items)
        for h, d in items:
            if owners[h] == doc_key(self.source, d):
                self.renewed(d, h)
        return owners


class ExactIndex(ClaimIndex[ExactRun]):
    @abstractmethod
    def claim(self, source: str, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        """Atomically: every unclaimed hash becomes ``source``'s; returns hash -> owner key."""

    @abstractmethod
    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        """Current claims among ``hashes`` (read only): hash -> owner key."""

    def _run(self, source: str) -> ExactRun:
        return ExactRun(self, source)


class SqliteExactIndex(ExactIndex):
    """``claims(hash PRIMARY KEY, source, doc_id)``; the format-1 file has the same table and is read
    as it is."""

    def __init__(self, path: Path):
        self.path = path
        self._db = connect(path)
        with immediate(self._db) as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS claims "
                "(hash BLOB PRIMARY KEY, source TEXT NOT NULL, doc_id TEXT NOT NULL) WITHOUT ROWID"
            )
            db.execute("CREATE INDEX IF NOT EXISTS claims_source ON claims(source)")

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        if not items:
            return {}
        hashes = [h for h, _ in items]
        with immediate(self._db) as db:
            db.executemany(
                "INSERT OR IGNORE INTO claims VALUES (?, ?, ?)", [(h, source, d) for h, d in items]
            )
            return self._owners(db, hashes)

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        return self._owners(self._db, hashes)

    @staticmethod
    def _owners(db, hashes: list[bytes]) -> dict[bytes, str]:
        found: dict[bytes, str] = {}
        for chunk in chunks(hashes):
            rows = db.execute(
                f"SELECT hash, source, doc_id FROM claims WHERE hash IN ({placeholders(len(chunk))})", chunk
            )
            found.update({h: doc_key(s, d) for h, s, d in rows})
        return found

    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        while True:
            with immediate(self._db) as db:
                rows = db.execute(
                    "DELETE FROM claims WHERE hash IN (SELECT hash FROM claims WHERE source = ? LIMIT ?) "
                    "RETURNING hash, doc_id",
                    (source, WITHDRAW_CHUNK),
                ).fetchall()
            removed.update((d, h) for h, d in rows)
            if len(rows) < WITHDRAW_CHUNK:
                return removed

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM claims").fetchone()[0]

    def close(self) -> None:
        self._db.close()


# KEYS: claims hash, the source's member set. ARGV: "<source>/", then hash, doc id pairs.
# Returns the owner key of every hash, in order.
_CLAIM = """
local out = {}
for i = 2, #ARGV, 2 do
  local h, key = ARGV[i], ARGV[1] .. ARGV[i + 1]
  if redis.call('HSETNX', KEYS[1], h, key) == 1 then
    redis.call('SADD', KEYS[2], h)
    out[#out + 1] = key
  else
    out[#out + 1] = redis.call('HGET', KEYS[1], h)
  end
end
return out
"""

# KEYS: claims hash, the source's member set. ARGV: "<source>/", chunk size.
# Pops up to a chunk of the source's hashes and deletes their claims; returns
# {popped, hash1, doc_id1, ...}.
_WITHDRAW = """
local popped = redis.call('SPOP', KEYS[2], tonumber(ARGV[2]))
local out = {#popped}
local n = #ARGV[1]
for _, h in ipairs(popped) do
  local owner = redis.call('HGET', KEYS[1], h)
  if owner and string.sub(owner, 1, n) == ARGV[1] then
    redis.call('HDEL', KEYS[1], h)
    out[#out + 1] = h
    out[#out + 1] = string.sub(owner, n + 1)
  end
end
return out
"""


class RedisExactIndex(ExactIndex):
    """Claims in the hash ``{ns}:exact:claims``; each source's hashes in ``{ns}:exact:members:<source>``
    (for withdrawal). A claim and its membership are written by one script, so a killed run never
    leaves a claim its partition's next run could not find and withdraw."""

    def __init__(self, client, namespace: str):
        self._r = client
        prefix = redis_prefix(namespace, "exact")
        legacy = legacy_redis_prefix(namespace, "exact")
        if self._r.exists(f"{legacy}:claims"):
            raise format_error("exact", f"redis namespace {namespace!r}", f"keys {legacy}:* without hash tag")
        self._r.setnx(f"{prefix}:format", REDIS_FORMAT)
        stored = self._r.get(f"{prefix}:format")
        if stored is not None and stored.decode() != REDIS_FORMAT:
            raise format_error("exact", f"redis namespace {namespace!r}", f"format {stored.decode()}")
        self._claims = f"{prefix}:claims"
        self._members = f"{prefix}:members:"
        self._claim_script = self._r.register_script(_CLAIM)
        self._withdraw_script = self._r.register_script(_WITHDRAW)

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        if not items:
            return {}
        args: list = [source + "/"]
        for h, d in items:
            args += [h, d]
        owners = self._claim_script(keys=[self._claims, self._members + source], args=args)
        return {h: o.decode() for (h, _), o in zip(items, owners, strict=True)}

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        if not hashes:
            return {}
        values = self._r.hmget(self._claims, hashes)
        return {h: v.decode() for h, v in zip(hashes, values, strict=True) if v is not None}

    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        while True:
            out = self._withdraw_script(
                keys=[self._claims, self._members + source], args=[source + "/", WITHDRAW_CHUNK]
            )
            removed.update((d.decode(), h) for h, d in zip(out[1::2], out[2::2], strict=True))
            if int(out[0]) < WITHDRAW_CHUNK:
                return removed

    def count(self) -> int:
        return int(self._r.hlen(self._claims))

    def close(self) -> None:
        self._r.close()
