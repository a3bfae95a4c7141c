"""Where the dedup indexes keep their keys in Redis. A document's own key across partitions,
``<source>/<id>``, is :func:`refinery.ids.doc_key`."""

from __future__ import annotations


def redis_prefix(namespace: str, kind: str) -> str:
    """``{namespace}:kind``: the hash tag ``{namespace}`` puts every key of one index in one Redis
    Cluster slot, so a Lua script may touch all of them."""
    return f"{{{namespace}}}:{kind}"


def legacy_redis_prefix(namespace: str, kind: str) -> str:
    """Where the format-1 indexes (before hash tags) kept their keys."""
    return f"{namespace}:{kind}"
