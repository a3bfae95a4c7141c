"""The persistent near-duplicate index: a datasketch ``MinHashLSH`` plus stored signatures.

LSH finds candidates; the stored signatures let every candidate be verified by its estimated
Jaccard similarity before a document is dropped, so the reason can name the kept neighbour and
the similarity, and LSH's false positives never remove anything.

Two backends over the same datasketch index: ``local`` keeps the index in memory and persists
it as one pickle under the home folder (written atomically when a partition commits); ``redis``
uses datasketch's Redis storage, with signatures and per-source membership in Redis too, so
several machines share one index. Queries are batched per band (one pipelined round trip per
band per batch on Redis). Index parameters are stored with the index and checked on open:
signatures made with other parameters cannot be compared, so a mismatch is an error.
"""

from __future__ import annotations

import json
import os
import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from datasketch import MinHashLSH

from refinery.dedup.minhash import MinHasher

FORMAT_VERSION = 1


class IndexParamsMismatch(ValueError):
    pass


def lsh_params(num_perm: int, ngram: int, threshold: float, seed: int) -> dict:
    from datasketch import MinHashLSH  # on use: datasketch imports scipy, seconds at start-up

    probe = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return {
        "num_perm": num_perm,
        "ngram": ngram,
        "threshold": threshold,
        "seed": seed,
        "bands": probe.b,
        "rows": probe.r,
        "scheme": "affine32",
        "format": FORMAT_VERSION,
    }


def _check(stored: dict, wanted: dict, where: str) -> None:
    if stored != wanted:
        diff = {k: (stored.get(k), wanted.get(k)) for k in wanted if stored.get(k) != wanted.get(k)}
        raise IndexParamsMismatch(
            f"the fuzzy index at {where} was built with other parameters {diff} (stored, requested). "
            "Signatures made with different parameters cannot be compared: use the stored parameters, "
            "or reset the index (`refinery index reset fuzzy`) and re-materialize every partition."
        )


class FuzzyIndex(ABC):
    def __init__(self, params: dict, lsh: MinHashLSH):
        self.params = params
        self.lsh = lsh
        self.hasher = MinHasher(params["num_perm"], params["ngram"], params["seed"])

    # -- band-batched queries, shared by both backends ------------------------------------------
    def band_keys(self, signatures: np.ndarray) -> list[list[bytes]]:
        """Per band, each signature's bucket key, exactly as datasketch stores it."""
        return [[self.lsh._H(sig[start:end]) for sig in signatures] for start, end in self.lsh.hashranges]

    def query(self, bands: list[list[bytes]]) -> list[set[bytes]]:
        """Candidate keys for each document, given :meth:`band_keys` (one round trip per band)."""
        found: list[set[bytes]] = [set() for _ in range(len(bands[0]) if bands else 0)]
        if not found:
            return found
        for keys, table in zip(bands, self.lsh.hashtables, strict=True):
            for bucket, hits in zip(found, table.getmany(*keys), strict=True):
                bucket.update(hits)
        return found

    def insert(self, source: str, keys: list[bytes], signatures: np.ndarray) -> None:
        with self.lsh.insertion_session() as session:
            for key, sig in zip(keys, signatures, strict=True):
                session.insert(key, self.hasher.lean(sig), check_duplication=False)
        self._store(source, keys, signatures)

    def remove_source(self, source: str) -> int:
        keys = self._members(source)
        with self.lsh.deletion_session() as session:
            for key in keys:
                if key in self.lsh:
                    session.remove(key)
        self._forget(source, keys)
        return len(keys)

    # -- backend specifics ---------------------------------------------------------------------
    @abstractmethod
    def signatures(self, keys: list[bytes]) -> dict[bytes, np.ndarray]: ...

    @abstractmethod
    def _members(self, source: str) -> list[bytes]: ...

    @abstractmethod
    def _store(self, source: str, keys: list[bytes], signatures: np.ndarray) -> None: ...

    @abstractmethod
    def _forget(self, source: str, keys: list[bytes]) -> None: ...

    @abstractmethod
    def count(self) -> int: ...

    def commit(self) -> None:  # noqa: B027 - optional hook: Redis writes are already durable
        """Make the current state durable (a no-op where every write already is)."""

    def close(self) -> None:  # noqa: B027 - optional hook: the local index holds no connection
        """Release connections."""


class LocalFuzzyIndex(FuzzyIndex):
    """In-memory datasketch index, pickled to one file; loads in full, saves atomically."""

    def __init__(self, path: Path, params: dict):
        self.path = path
        if path.exists():
            with path.open("rb") as fh:
                state = pickle.load(fh)
            _check(state["params"], params, str(path))
            lsh, self._sigs, self._by_source = state["lsh"], state["signatures"], state["members"]
        else:
            from datasketch import MinHashLSH

            lsh = MinHashLSH(num_perm=params["num_perm"], params=(params["bands"], params["rows"]))
            self._sigs, self._by_source = {}, {}
        super().__init__(params, lsh)

    def signatures(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        return {k: np.frombuffer(self._sigs[k], dtype=np.uint32) for k in keys if k in self._sigs}

    def _members(self, source: str) -> list[bytes]:
        return list(self._by_source.get(source, ()))

    def _store(self, source: str, keys: list[bytes], signatures: np.ndarray) -> None:
        self._by_source.setdefault(source, []).extend(keys)
        for key, sig in zip(keys, signatures, strict=True):
            self._sigs[key] = sig.astype(np.uint32).tobytes()

    def _forget(self, source: str, keys: list[bytes]) -> None:
        for key in keys:
            self._sigs.pop(key, None)
        self._by_source.pop(source, None)

    def count(self) -> int:
        return len(self._sigs)

    def commit(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temp.open("wb") as fh:
            pickle.dump(
                {
                    "params": self.params,
                    "lsh": self.lsh,
                    "signatures": self._sigs,
                    "members": self._by_source,
                },
                fh,
                protocol=pickle.HIGHEST_PROTOCOL,
            )
        os.replace(temp, self.path)


class RedisFuzzyIndex(FuzzyIndex):
    """datasketch's Redis storage for the bands; signatures and membership beside it."""

    def __init__(self, client, connection: dict, namespace: str, params: dict):
        self._r = client
        self._ns = namespace
        stored = self._r.get(f"{namespace}:fuzzy:params")
        if stored is None:
            self._r.set(f"{namespace}:fuzzy:params", json.dumps(params, sort_keys=True))
        else:
            _check(json.loads(stored), params, f"redis {connection} namespace {namespace!r}")
        from datasketch import MinHashLSH

        lsh = MinHashLSH(
            num_perm=params["num_perm"],
            params=(params["bands"], params["rows"]),
            prepickle=False,
            storage_config={
                "type": "redis",
                "basename": f"{namespace}:fuzzy:lsh".encode(),
                "redis": connection,
            },
        )
        super().__init__(params, lsh)
        self._sig_key = f"{namespace}:fuzzy:signatures"
        self._member_prefix = f"{namespace}:fuzzy:members:"

    def signatures(self, keys: list[bytes]) -> dict[bytes, np.ndarray]:
        if not keys:
            return {}
        values = self._r.hmget(self._sig_key, keys)
        return {
            k: np.frombuffer(v, dtype=np.uint32) for k, v in zip(keys, values, strict=True) if v is not None
        }

    def _members(self, source: str) -> list[bytes]:
        return list(self._r.smembers(self._member_prefix + source))

    def _store(self, source: str, keys: list[bytes], signatures: np.ndarray) -> None:
        if not keys:
            return
        pipe = self._r.pipeline()
        pipe.hset(
            self._sig_key,
            mapping={k: s.astype(np.uint32).tobytes() for k, s in zip(keys, signatures, strict=True)},
        )
        pipe.sadd(self._member_prefix + source, *keys)
        pipe.execute()

    def _forget(self, source: str, keys: list[bytes]) -> None:
        pipe = self._r.pipeline()
        if keys:
            pipe.hdel(self._sig_key, *keys)
        pipe.delete(self._member_prefix + source)
        pipe.execute()

    def count(self) -> int:
        return int(self._r.hlen(self._sig_key))

    def close(self) -> None:
        self._r.close()
