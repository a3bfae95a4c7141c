"""The persistent near-duplicate index: LSH band buckets plus stored signatures, claimed atomically.

LSH finds candidates (documents sharing a bucket in at least one band, :mod:`refinery.dedup.banding`);
the stored signatures let every candidate be verified by its estimated Jaccard similarity (the share
of equal signature positions) before a document is dropped, so the reason names the kept neighbour
and the similarity, and LSH's false candidates never remove anything.

A batch is claimed in one atomic step per chunk of documents, in reading order: look up the
candidates of each document, verify them, and either insert the document (its bucket in every band,
its signature, its source's membership) or return the most similar kept document (ties: the smallest
key) and the similarity. A document inserted earlier in the same step is a candidate for later ones,
so within-batch and cross-partition near-duplicates are decided by the same code and the same rule
(:mod:`refinery.dedup.claims`): whoever inserts a neighbourhood first owns it.

- ``local``: SQLite (``docs`` and ``buckets`` tables), each chunk one ``BEGIN IMMEDIATE``
  transaction; nothing is read or rewritten whole, and memory does not grow with the index.
- ``redis``: a Lua script per chunk over ``{ns}:fuzzy:b:<band>:<bucket>`` sets of document keys,
  the ``{ns}:fuzzy:sigs`` hash and ``{ns}:fuzzy:members:<source>`` sets; every key carries the hash
  tag ``{ns}`` so the script's keys share one Redis Cluster slot. Signatures are compared in Lua as
  4-byte substrings.

Index parameters (permutations, shingles, seed, threshold, banding, format) are stored with the index
and checked on open: signatures or buckets made with other parameters cannot be compared. Indexes
of format 1 (a datasketch ``MinHashLSH`` pickled to ``fuzzy_lsh.pickle``, or datasketch's Redis
layout) are refused with an error that says to reset them.
"""

from __future__ import annotations

import json
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refinery.dedup.banding import band_buckets, choose_banding
from refinery.dedup.claims import ClaimIndex, ClaimRun, digest
from refinery.dedup.errors import RESET_HINT, IndexParamsMismatch, format_error
from refinery.dedup.keys import legacy_redis_prefix, redis_prefix
from refinery.dedup.minhash import MinHasher
from refinery.dedup.sqlite_store import chunks, connect, immediate, placeholders
from refinery.ids import doc_key

__all__ = ["FORMAT_VERSION", "FuzzyIndex", "IndexParamsMismatch", "RedisFuzzyIndex", "SqliteFuzzyIndex"]

FORMAT_VERSION = 2  # 1: datasketch MinHashLSH (pickle / datasketch Redis storage); 2: own band buckets
SQLITE_CHUNK_DOCS = 1_000  # documents per claim transaction: the lock is held for one chunk
REDIS_CHUNK_DOCS = 200  # documents per Lua script call: Redis is blocked for one chunk
WITHDRAW_CHUNK_DOCS = 5_000


def lsh_params(num_perm: int, ngram: int, threshold: float, seed: int, recall: float = 0.9) -> dict:
    """Everything that must match between an index and the signatures compared against it."""
    bands, rows = choose_banding(num_perm, threshold, recall)
    return {
        "num_perm": num_perm,
        "ngram": ngram,
        "threshold": threshold,
        "seed": seed,
        "recall": recall,
        "bands": bands,
        "rows": rows,
        "scheme": "affine32",
        "buckets": "mix64",
        "format": FORMAT_VERSION,
    }


def _check(stored: dict, wanted: dict, where: str) -> None:
    if stored.get("format") != FORMAT_VERSION:
        raise format_error("fuzzy", where, f"format {stored.get('format')}")
    if stored != wanted:
        diff = {k: (stored.get(k), wanted.get(k)) for k in wanted if stored.get(k) != wanted.get(k)}
        raise IndexParamsMismatch(
            f"the fuzzy index at {where} was built with other parameters {diff} (stored, requested). "
            "Signatures made with different parameters cannot be compared: use the stored parameters, or "
            + RESET_HINT.format(which="fuzzy")
            + "."
        )


def check_index_params(stored: dict, wanted: dict, where: str) -> None:
    """Refuse an index whose stored parameters or format differ from the wanted ones (every backend)."""
    _check(stored, wanted, where)


@dataclass
class FuzzyOutcome:
    """Per document of a claimed batch: ``owner`` is None where the document was inserted (kept),
    else the kept document it duplicates; ``similarity`` is the best estimated Jaccard with any
    candidate (0 when there was none)."""

    owner: list[str | None]
    similarity: np.ndarray


class FuzzyRun(ClaimRun[bytes]):
    """One partition's claims on the fuzzy index."""

    index: FuzzyIndex

    def claim(self, ids: list[str], signatures: np.ndarray) -> FuzzyOutcome:
        outcome = self.index.claim(self.source, ids, signatures)
        for doc_id, sig, owner in zip(ids, signatures, outcome.owner, strict=True):
            if owner is None:
                self.renewed(doc_id, digest(_sig_bytes(sig)))
        return outcome


def _sig_bytes(signature: np.ndarray) -> bytes:
    return np.ascontiguousarray(signature, dtype="<u4").tobytes()


signature_bytes = _sig_bytes  # the stored form of a signature, for the other backends' modules


class FuzzyIndex(ClaimIndex[FuzzyRun]):
    def __init__(self, params: dict):
        self.params = params
        self.hasher = MinHasher(params["num_perm"], params["ngram"], params["seed"])
        self.bands, self.rows = params["bands"], params["rows"]
        self.threshold = params["threshold"]
        # The fewest equal positions that reach the threshold, as ``equal / num_perm >= threshold``
        # decides in floating point (the same test the similarity column reports).
        perms = params["num_perm"]
        self.min_equal = max(1, next(e for e in range(perms + 1) if e / perms >= self.threshold))

    def buckets(self, signatures: np.ndarray) -> np.ndarray:
        """(n, bands) int64 bucket of each document in each band."""
        return band_buckets(signatures, self.bands, self.rows)

    @abstractmethod
    def claim(self, source: str, ids: list[str], signatures: np.ndarray) -> FuzzyOutcome:
        """Atomically per chunk, in order: verify each document against its candidates and insert
        it where none reaches the threshold."""

    def _run(self, source: str) -> FuzzyRun:
        return FuzzyRun(self, source)


def _best(signature: np.ndarray, pool: list[tuple[str, np.ndarray]]) -> tuple[int, str | None]:
    """The candidate with the most equal positions (ties: the smallest key) and that count."""
    if not pool:
        return 0, None
    equal = np.count_nonzero(np.stack([s for _, s in pool]) == signature, axis=1)
    top = int(equal.max())
    if top == 0:
        return 0, None
    return top, min(k for (k, _), e in zip(pool, equal, strict=True) if e == top)


class SqliteFuzzyIndex(FuzzyIndex):
    """``docs(doc, source, doc_id, signature)`` and ``buckets(band, bucket, doc)`` in one SQLite file."""

    def __init__(self, path: Path, params: dict, legacy: Path | None = None):
        if legacy is not None and legacy.exists():
            raise format_error("fuzzy", str(legacy), "a datasketch MinHashLSH pickle")
        super().__init__(params)
        self.path = path
        self._db = connect(path)
        with immediate(self._db) as db:
            db.execute("CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute(
                "CREATE TABLE IF NOT EXISTS docs (doc INTEGER PRIMARY KEY, source TEXT NOT NULL, "
                "doc_id TEXT NOT NULL, signature BLOB NOT NULL, UNIQUE (source, doc_id))"
            )
            db.execute(
                "CREATE TABLE IF NOT EXISTS buckets (band INTEGER NOT NULL, bucket INTEGER NOT NULL, "
                "doc INTEGER NOT NULL, PRIMARY KEY (band, bucket, doc)) WITHOUT ROWID"
            )
            db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('params', ?)", (json.dumps(params, sort_keys=True),)
            )
            stored = json.loads(db.execute("SELECT value FROM meta WHERE name = 'params'").fetchone()[0])
        try:
            _check(stored, params, str(path))
        except IndexParamsMismatch:
            self._db.close()
            raise

    def claim(self, source: str, ids: list[str], signatures: np.ndarray) -> FuzzyOutcome:
        owners: list[str | None] = [None] * len(ids)
        similarity = np.zeros(len(ids), dtype=np.float64)
        buckets = self.buckets(signatures) if len(ids) else np.zeros((0, self.bands), np.int64)
        for lo in range(0, len(ids), SQLITE_CHUNK_DOCS):
            hi = min(len(ids), lo + SQLITE_CHUNK_DOCS)
            with immediate(self._db) as db:
                self._claim_chunk(
                    db, source, ids[lo:hi], signatures[lo:hi], buckets[lo:hi], owners, similarity, lo
                )
        return FuzzyOutcome(owners, similarity)

    def _claim_chunk(self, db, source, ids, sigs, buckets, owners, similarity, offset) -> None:
        tables: list[dict[int, list[int]]] = [{} for _ in range(self.bands)]  # per band: bucket -> docs
        for band, table in enumerate(tables):
            for chunk in chunks(np.unique(buckets[:, band]).tolist()):
                rows = db.execute(
                    "SELECT bucket, doc FROM buckets WHERE band = ? "
                    f"AND bucket IN ({placeholders(len(chunk))})",
                    (band, *chunk),
                )
                for bucket, doc in rows:
                    table.setdefault(bucket, []).append(doc)
        known: dict[int, tuple[str, np.ndarray]] = {}
        wanted = sorted({d for table in tables for docs in table.values() for d in docs})
        for chunk in chunks(wanted):
            rows = db.execute(
                f"SELECT doc, source, doc_id, signature FROM docs WHERE doc IN ({placeholders(len(chunk))})",
                chunk,
            )
            known.update({doc: (doc_key(s, d), np.frombuffer(sig, dtype="<u4")) for doc, s, d, sig in rows})
        present: set[str] = set()
        for chunk in chunks(ids):
            rows = db.execute(
                f"SELECT doc_id FROM docs WHERE source = ? AND doc_id IN ({placeholders(len(chunk))})",
                (source, *chunk),
            )
            present.update(d for (d,) in rows)
        next_doc = (db.execute("SELECT MAX(doc) FROM docs").fetchone()[0] or 0) + 1
        perms = self.params["num_perm"]
        sigs = np.ascontiguousarray(sigs, dtype="<u4")
        new_docs, new_buckets = [], []
        for i, (doc_id, row) in enumerate(zip(ids, buckets.tolist(), strict=True)):
            key = doc_key(source, doc_id)
            candidates: set[int] = set()
            for table, b in zip(tables, row, strict=True):
                found = table.get(b)
                if found:
                    candidates.update(found)
            equal, best = 0, None
            if candidates:
                equal, best = _best(sigs[i], [known[d] for d in candidates if known[d][0] != key])
            similarity[offset + i] = equal / perms
            if equal >= self.min_equal:
                owners[offset + i] = best
                continue
            if doc_id in present:  # already indexed (only a concurrent run of the same partition does this)
                continue
            doc, next_doc = next_doc, next_doc + 1
            known[doc] = (key, sigs[i])
            for band, (table, b) in enumerate(zip(tables, row, strict=True)):
                table.setdefault(b, []).append(doc)
                new_buckets.append((band, b, doc))
            new_docs.append((doc, source, doc_id, sigs[i].tobytes()))
        db.executemany("INSERT INTO docs VALUES (?, ?, ?, ?)", new_docs)
        new_buckets.sort()  # in key order, so neighbouring inserts share B-tree pages
        db.executemany("INSERT INTO buckets VALUES (?, ?, ?)", new_buckets)

    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        while True:
            with immediate(self._db) as db:
                rows = db.execute(
                    "SELECT doc, doc_id, signature FROM docs WHERE source = ? LIMIT ?",
                    (source, WITHDRAW_CHUNK_DOCS),
                ).fetchall()
                if rows:
                    sigs = np.stack([np.frombuffer(s, dtype="<u4") for _, _, s in rows])
                    buckets = self.buckets(sigs)
                    db.executemany(
                        "DELETE FROM buckets WHERE band = ? AND bucket = ? AND doc = ?",
                        [
                            (band, int(b), doc)
                            for (doc, _, _), row in zip(rows, buckets, strict=True)
                            for band, b in enumerate(row)
                        ],
                    )
                    db.executemany("DELETE FROM docs WHERE doc = ?", [(doc,) for doc, _, _ in rows])
            removed.update((d, digest(s)) for _, d, s in rows)
            if len(rows) < WITHDRAW_CHUNK_DOCS:
                return removed

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM docs").fetchone()[0]

    def close(self) -> None:
        self._db.close()


# KEYS: signatures hash, the source's member set, then each document's bucket set per band
# (document-major). ARGV: bands, num_perm, equal positions needed, "<source>/", then per document
# its id and its signature (num_perm little-endian uint32). Per document returns
# {inserted (1/0), best equal positions, keys at that count if not inserted...}.
_CLAIM = """
local bands, perms, need = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local prefix = ARGV[4]
local function equal(a, b)
  if a == b then return perms end
  local n = 0
  for k = 1, 4 * perms, 4 do
    if string.sub(a, k, k + 3) == string.sub(b, k, k + 3) then n = n + 1 end
  end
  return n
end
local out = {}
for i = 0, (#ARGV - 4) / 2 - 1 do
  local key, sig = prefix .. ARGV[5 + 2 * i], ARGV[6 + 2 * i]
  local base = 2 + i * bands
  local seen, best, ties = {[key] = true}, 0, {}
  for j = 1, bands do
    for _, other in ipairs(redis.call('SMEMBERS', KEYS[base + j])) do
      if not seen[other] then
        seen[other] = true
        local stored = redis.call('HGET', KEYS[1], other)
        if stored then
          local e = equal(sig, stored)
          if e > best then
            best, ties = e, {other}
          elseif e == best and e > 0 then
            ties[#ties + 1] = other
          end
        end
      end
    end
  end
  local row = {0, best}
  if best < need then
    row[1] = 1
    for j = 1, bands do redis.call('SADD', KEYS[base + j], key) end
    redis.call('HSET', KEYS[1], key, sig)
    redis.call('SADD', KEYS[2], key)
  else
    for _, t in ipairs(ties) do row[#row + 1] = t end
  end
  out[#out + 1] = row
end
return out
"""

# KEYS: signatures hash, the source's member set, then the bucket sets of the first ARGV[2]
# documents (document-major). ARGV: bands, documents with buckets, then the documents' keys.
_REMOVE = """
local bands, with_buckets = tonumber(ARGV[1]), tonumber(ARGV[2])
for i = 3, #ARGV do
  local key = ARGV[i]
  if i - 3 < with_buckets then
    local base = 2 + (i - 3) * bands
    for j = 1, bands do redis.call('SREM', KEYS[base + j], key) end
  end
  redis.call('HDEL', KEYS[1], key)
  redis.call('SREM', KEYS[2], key)
end
return #ARGV - 2
"""


class RedisFuzzyIndex(FuzzyIndex):
    """Band buckets as Redis sets of document keys, signatures and membership beside them."""

    def __init__(self, client, namespace: str, params: dict):
        self._r = client
        prefix = redis_prefix(namespace, "fuzzy")
        legacy = legacy_redis_prefix(namespace, "fuzzy")
        where = f"redis namespace {namespace!r}"
        if self._r.exists(f"{legacy}:params"):
            raise format_error("fuzzy", where, f"datasketch keys {legacy}:* without hash tag")
        self._r.setnx(f"{prefix}:params", json.dumps(params, sort_keys=True))
        _check(json.loads(self._r.get(f"{prefix}:params")), params, where)
        super().__init__(params)
        self._sigs = f"{prefix}:sigs"
        self._members = f"{prefix}:members:"
        self._bucket = f"{prefix}:b:"
        self._claim_script = self._r.register_script(_CLAIM)
        self._remove_script = self._r.register_script(_REMOVE)

    def _bucket_keys(self, buckets: np.ndarray) -> list[str]:
        """Document-major key names of each document's bucket in each band."""
        as_u64 = buckets.view(np.uint64)
        return [f"{self._bucket}{band}:{int(b):016x}" for row in as_u64 for band, b in enumerate(row)]

    def claim(self, source: str, ids: list[str], signatures: np.ndarray) -> FuzzyOutcome:
        owners: list[str | None] = [None] * len(ids)
        similarity = np.zeros(len(ids), dtype=np.float64)
        perms = self.params["num_perm"]
        for lo in range(0, len(ids), REDIS_CHUNK_DOCS):
            hi = min(len(ids), lo + REDIS_CHUNK_DOCS)
            keys = [self._sigs, self._members + source, *self._bucket_keys(self.buckets(signatures[lo:hi]))]
            args: list = [self.bands, perms, self.min_equal, source + "/"]
            for doc_id, sig in zip(ids[lo:hi], signatures[lo:hi], strict=True):
                args += [doc_id, _sig_bytes(sig)]
            for i, row in enumerate(self._claim_script(keys=keys, args=args), start=lo):
                similarity[i] = int(row[1]) / perms
                if int(row[0]) == 0:
                    owners[i] = min(k.decode() for k in row[2:])
        return FuzzyOutcome(owners, similarity)

    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        members = self._members + source
        while True:
            keys = self._r.srandmember(members, WITHDRAW_CHUNK_DOCS)
            if not keys:
                return removed
            sigs = self._r.hmget(self._sigs, keys)
            with_sig = [(k, s) for k, s in zip(keys, sigs, strict=True) if s is not None]
            without = [k for k, s in zip(keys, sigs, strict=True) if s is None]
            bucket_keys = (
                self._bucket_keys(
                    self.buckets(np.stack([np.frombuffer(s, dtype="<u4") for _, s in with_sig]))
                )
                if with_sig
                else []
            )
            ordered = [k for k, _ in with_sig] + without
            self._remove_script(
                keys=[self._sigs, members, *bucket_keys], args=[self.bands, len(with_sig), *ordered]
            )
            cut = len(source) + 1
            removed.update((k.decode()[cut:], digest(s)) for k, s in with_sig)

    def count(self) -> int:
        return int(self._r.hlen(self._sigs))

    def close(self) -> None:
        self._r.close()
