"""Opening the dedup indexes by backend name: ``local`` (files under the home), ``redis`` (one
server, every key of an index in one slot) or ``redis-cluster`` (spread over every shard of a Redis
Cluster: :mod:`refinery.dedup.sharded_exact`, :mod:`refinery.dedup.sharded_fuzzy`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from refinery.dedup.exact_index import ExactIndex, RedisExactIndex, SqliteExactIndex
from refinery.dedup.keys import legacy_redis_prefix, redis_prefix
from refinery.dedup.lsh_index import FuzzyIndex, RedisFuzzyIndex, SqliteFuzzyIndex
from refinery.paths import Layout

if TYPE_CHECKING:
    import redis

BACKENDS = ("local", "redis", "redis-cluster")
KINDS = ("exact", "fuzzy")
SCOPES = ("text", "sft", "all")
# Local index files by kind: the text pipeline's, then the SFT groups' (``sft_<kind>_<group>``).
# ``.pickle`` is the format-1 fuzzy index, removed by a reset so the new one can be created.
_LOCAL_SUFFIXES = {"exact": (".sqlite",), "fuzzy": (".sqlite", ".pickle")}
_SQLITE_SIDE_FILES = ("", "-wal", "-shm")


def redis_connection(url: str) -> dict:
    """The keyword arguments of ``redis.Redis`` for a ``redis://`` URL."""
    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// URL, got {url!r}")
    conn = {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 6379,
        "db": int(parsed.path.lstrip("/") or 0),
    }
    if parsed.password:
        conn["password"] = unquote(parsed.password)
    if parsed.username:
        conn["username"] = unquote(parsed.username)
    if parsed.scheme == "rediss":
        conn["ssl"] = True
    return conn


def redis_client(url: str) -> redis.Redis:
    """A connected client, or a ConnectionError that names the URL."""
    import redis  # on use: the client library takes most of a second to import

    client = redis.Redis(**redis_connection(url), socket_connect_timeout=5)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as err:
        raise ConnectionError(f"cannot reach the Redis dedup index at {url}: {err}") from err
    return client


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"unknown dedup index backend {backend!r}; choose one of {BACKENDS}")


def local_index_path(layout: Layout, kind: str, group: str | None = None) -> Path:
    """``index/exact.sqlite``, ``index/fuzzy_lsh.sqlite``, or ``index/sft_<kind>_<group>.sqlite``."""
    stem = f"sft_{kind}_{group}" if group else {"exact": "exact", "fuzzy": "fuzzy_lsh"}[kind]
    return layout.index / f"{stem}.sqlite"


def open_exact_index(backend: str, layout: Layout, redis_url: str, namespace: str) -> ExactIndex:
    _check_backend(backend)
    if backend == "redis":
        return RedisExactIndex(redis_client(redis_url), namespace)
    if backend == "redis-cluster":
        from refinery.dedup.redis_cluster import cluster_client
        from refinery.dedup.sharded_exact import ShardedExactIndex

        return ShardedExactIndex(cluster_client(redis_url), namespace)
    return SqliteExactIndex(local_index_path(layout, "exact"))


def open_fuzzy_index(
    backend: str, layout: Layout, redis_url: str, namespace: str, params: dict
) -> FuzzyIndex:
    _check_backend(backend)
    if backend == "redis":
        return RedisFuzzyIndex(redis_client(redis_url), namespace, params)
    if backend == "redis-cluster":
        from refinery.dedup.redis_cluster import cluster_client
        from refinery.dedup.sharded_fuzzy import ShardedFuzzyIndex

        return ShardedFuzzyIndex(cluster_client(redis_url), namespace, params)
    path = local_index_path(layout, "fuzzy")
    return SqliteFuzzyIndex(path, params, legacy=path.with_suffix(".pickle"))


def _local_targets(layout: Layout, kind: str, scope: str) -> list[Path]:
    stems = []
    if scope in ("text", "all"):
        stems.append(local_index_path(layout, kind).stem)
    if scope in ("sft", "all") and layout.index.exists():
        stems += sorted({p.name.split(".")[0] for p in layout.index.glob(f"sft_{kind}_*")})
    return [
        layout.index / f"{stem}{suffix}{side}"
        for stem in stems
        for suffix in _LOCAL_SUFFIXES[kind]
        for side in (_SQLITE_SIDE_FILES if suffix == ".sqlite" else ("",))
    ]


def _redis_patterns(namespace: str, kind: str, scope: str) -> list[str]:
    """Key patterns of the current layout (hash-tagged) and of format 1, per scope."""
    spaces = []
    if scope in ("text", "all"):
        spaces.append(namespace)
    if scope in ("sft", "all"):
        spaces.append(f"{namespace}:sft-*")
    return [p for ns in spaces for p in (f"{redis_prefix(ns, kind)}:*", f"{legacy_redis_prefix(ns, kind)}:*")]


def reset_indexes(
    backend: str, layout: Layout, redis_url: str, namespace: str, which: str = "all", scope: str = "all"
) -> list[str]:
    """Delete the stored index(es) of ``which`` kind ("exact", "fuzzy", "all") for the text pipeline,
    the SFT groups or both (``scope``), in the current layout and the format-1 one; returns what was
    removed. Run it while nothing materializes a dedup stage."""
    _check_backend(backend)
    if which not in (*KINDS, "all"):
        raise ValueError(f"unknown index {which!r}; choose one of {(*KINDS, 'all')}")
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}; choose one of {SCOPES}")
    kinds = KINDS if which == "all" else (which,)
    removed: list[str] = []
    if backend == "local":
        for kind in kinds:
            for path in _local_targets(layout, kind, scope):
                if path.exists():
                    path.unlink()
                    removed.append(str(path))
        return removed
    if backend == "redis-cluster":
        return _reset_cluster(redis_url, namespace, kinds, scope)
    client = redis_client(redis_url)
    try:
        for kind in kinds:
            for pattern in _redis_patterns(namespace, kind, scope):
                keys = list(client.scan_iter(match=pattern, count=1000))
                for i in range(0, len(keys), 1000):
                    client.delete(*keys[i : i + 1000])
                removed += [k.decode("utf-8", "backslashreplace") for k in keys]
    finally:
        client.close()
    return sorted(set(removed))


@dataclass(frozen=True)
class DedupIndexes:
    """Where the shared dedup indexes live (``local`` SQLite files under the home, or ``redis``): a
    plain value that pickles; :meth:`exact` and :meth:`fuzzy` open them."""

    backend: str = "local"
    redis_url: str = "redis://127.0.0.1:6379/0"
    namespace: str = "refinery"

    def exact(self, layout: Layout) -> ExactIndex:
        return open_exact_index(self.backend, layout, self.redis_url, self.namespace)

    def fuzzy(self, layout: Layout, params: dict) -> FuzzyIndex:
        return open_fuzzy_index(self.backend, layout, self.redis_url, self.namespace, params)


def _reset_cluster(redis_url: str, namespace: str, kinds: tuple[str, ...], scope: str) -> list[str]:
    """Delete the sharded layout's keys (``{<ns>:<kind>:…}`` and ``<ns>:<kind>:…``) on every node."""
    from refinery.dedup.redis_cluster import cluster_client

    spaces = ([namespace] if scope in ("text", "all") else []) + (
        [f"{namespace}:sft-*"] if scope in ("sft", "all") else []
    )
    client = cluster_client(redis_url)
    removed: list[str] = []
    try:
        for kind in kinds:
            for space in spaces:
                for pattern in (f"{{{space}:{kind}:*", f"{space}:{kind}:*"):
                    keys = list(client.scan_iter(match=pattern, count=1000))
                    for i in range(0, len(keys), 1000):
                        pipe = client.pipeline()
                        for key in keys[i : i + 1000]:
                            pipe.delete(key)
                        pipe.execute()
                    removed += [k.decode("utf-8", "backslashreplace") for k in keys]
    finally:
        client.close()
    return sorted(set(removed))
