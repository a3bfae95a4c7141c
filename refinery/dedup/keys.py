"""Index keys name a document across partitions as ``<source>/<id>``.

Sources are restricted to file-name-safe characters without '/', so the first '/' always
separates the source from an id that may itself contain slashes.
"""

from __future__ import annotations


def doc_key(source: str, doc_id: str) -> str:
    return f"{source}/{doc_id}"


def split_key(key: str) -> tuple[str, str]:
    source, _, doc_id = key.partition("/")
    return source, doc_id


def redis_prefix(namespace: str, kind: str) -> str:
    """``{namespace}:kind``: the hash tag ``{namespace}`` puts every key of one index in one Redis
    Cluster slot, so a Lua script may touch all of them."""
    return f"{{{namespace}}}:{kind}"


def legacy_redis_prefix(namespace: str, kind: str) -> str:
    """Where the format-1 indexes (before hash tags) kept their keys."""
    return f"{namespace}:{kind}"
