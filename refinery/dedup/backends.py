"""Opening the dedup indexes by backend name: ``local`` (files under the home) or ``redis``."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

from refinery.dedup.exact_index import ExactIndex, RedisExactIndex, SqliteExactIndex
from refinery.dedup.lsh_index import FuzzyIndex, LocalFuzzyIndex, RedisFuzzyIndex
from refinery.paths import Layout

if TYPE_CHECKING:
    import redis

BACKENDS = ("local", "redis")


def redis_connection(url: str) -> dict:
    """The keyword arguments of ``redis.Redis`` for a ``redis://`` URL (datasketch takes a dict)."""
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


def open_exact_index(backend: str, layout: Layout, redis_url: str, namespace: str) -> ExactIndex:
    _check_backend(backend)
    if backend == "redis":
        return RedisExactIndex(redis_client(redis_url), namespace)
    return SqliteExactIndex(layout.index / "exact.sqlite")


def open_fuzzy_index(
    backend: str, layout: Layout, redis_url: str, namespace: str, params: dict
) -> FuzzyIndex:
    _check_backend(backend)
    if backend == "redis":
        return RedisFuzzyIndex(redis_client(redis_url), redis_connection(redis_url), namespace, params)
    return LocalFuzzyIndex(layout.index / "fuzzy_lsh.pickle", params)


def reset_indexes(
    backend: str, layout: Layout, redis_url: str, namespace: str, which: str = "all"
) -> list[str]:
    """Delete the stored index(es); returns what was removed."""
    _check_backend(backend)
    removed: list[str] = []
    if backend == "local":
        targets = {
            "exact": ["exact.sqlite", "exact.sqlite-wal", "exact.sqlite-shm"],
            "fuzzy": ["fuzzy_lsh.pickle"],
        }
        for kind, names in targets.items():
            if which in (kind, "all"):
                for name in names:
                    path = layout.index / name
                    if path.exists():
                        path.unlink()
                        removed.append(str(path))
        return removed
    client = redis_client(redis_url)
    for kind in ("exact", "fuzzy"):
        if which in (kind, "all"):
            keys = list(client.scan_iter(match=f"{namespace}:{kind}:*"))
            if keys:
                client.delete(*keys)
            removed += [k.decode("utf-8", "backslashreplace") for k in keys]
    return removed
