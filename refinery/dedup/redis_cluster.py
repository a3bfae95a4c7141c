"""What the sharded dedup indexes share: the Redis Cluster client, slot groups, and clear failures.

The ``redis`` backend puts every key of an index under one hash tag, so one Lua script can decide
a whole batch, but the whole index lives in one slot: one node, one core. The ``redis-cluster``
backend (:mod:`refinery.dedup.sharded_exact`, :mod:`refinery.dedup.sharded_fuzzy`) spreads its
keys over every slot instead:

- per-document state lives in one of :data:`SLOT_GROUPS` groups, each under its own hash tag
  (``{<ns>:<kind>:<group>}``), so an index spreads evenly over any number of shards up to
  hundreds, while a Lua script over one group's keys stays atomic;
- LSH buckets carry no hash tag at all: each (band, bucket) set lands on its own slot;
- every command a batch needs is sent as one pipeline, which the cluster client splits by node
  and sends to all nodes before reading any reply, so a batch costs one round trip per step, not
  one per document, and the shards work in parallel.

A node that is down (or a cluster that lost coverage of a slot) makes the claim raise
:class:`IndexUnavailable`, which names the index and says what happens to the run's claims.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from redis.cluster import RedisCluster

SLOT_GROUPS = 1024  # hash-tag groups of per-document state: enough to spread over hundreds of shards


class IndexUnavailable(ConnectionError):
    """A Redis Cluster node of the dedup index could not be reached during a claim or withdrawal."""


def cluster_client(url: str) -> RedisCluster:
    """A client of the Redis Cluster that the node at ``url`` belongs to (any node will do: the
    client discovers the others), or an :class:`IndexUnavailable` that names the URL."""
    import redis
    from redis.cluster import RedisCluster

    parsed = urlparse(url)
    if parsed.scheme not in ("redis", "rediss"):
        raise ValueError(f"expected a redis:// URL of a Redis Cluster node, got {url!r}")
    kwargs: dict = {
        "host": parsed.hostname or "127.0.0.1",
        "port": parsed.port or 6379,
        "socket_connect_timeout": 3,
        "socket_timeout": 30,
    }
    if parsed.password:
        kwargs["password"] = unquote(parsed.password)
    if parsed.username:
        kwargs["username"] = unquote(parsed.username)
    if parsed.scheme == "rediss":
        kwargs["ssl"] = True
    try:
        client = RedisCluster(**kwargs)
        client.ping(target_nodes=RedisCluster.ALL_NODES)
    except redis.exceptions.RedisClusterException as err:
        raise IndexUnavailable(
            f"cannot use the Redis Cluster dedup index at {url}: {err} (is it a node of a Redis Cluster "
            "with every slot assigned? a standalone Redis takes the 'redis' backend)"
        ) from err
    except redis.exceptions.RedisError as err:
        raise IndexUnavailable(f"cannot reach the Redis Cluster dedup index at {url}: {err}") from err
    return client


@contextmanager
def unavailable_as(what: str) -> Iterator[None]:
    """Turn a lost node, a timeout or a cluster without full coverage into :class:`IndexUnavailable`."""
    import redis

    try:
        yield
    except IndexUnavailable:
        raise
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as err:
        raise IndexUnavailable(f"{what}: a Redis Cluster node is unreachable ({err!r})") from err
    except (redis.exceptions.ClusterError, redis.exceptions.RedisClusterException) as err:
        raise IndexUnavailable(f"{what}: the Redis Cluster is not serving every slot ({err!r})") from err


def slot_group(data: bytes | str, groups: int = SLOT_GROUPS) -> int:
    """A stable group in ``[0, groups)`` for a content hash or a document key."""
    if isinstance(data, str):
        data = data.encode("utf-8", "surrogatepass")
    return int.from_bytes(hashlib.blake2b(data, digest_size=4).digest(), "little") % groups


class Scripts:
    """Lua scripts queued by SHA in cluster pipelines, loaded on every primary when a node answers
    NOSCRIPT (a restarted node has an empty script cache). Every script here is idempotent, so a
    pipeline re-sent after loading them gives the same result."""

    def __init__(self, client, **bodies: str):
        self._r = client
        self.bodies = bodies
        self.sha = {name: hashlib.sha1(body.encode()).hexdigest() for name, body in bodies.items()}

    def queue(self, pipe, name: str, keys: list, args: list) -> None:
        pipe.evalsha(self.sha[name], len(keys), *keys, *args)

    def load(self) -> None:
        for body in self.bodies.values():
            self._r.script_load(body)

    def run(self, build) -> list:
        """Build a pipeline with ``build(pipe)`` and execute it, loading the scripts once on NOSCRIPT."""
        import redis

        for attempt in (0, 1):
            pipe = self._r.pipeline()
            build(pipe)
            try:
                return pipe.execute(raise_on_error=True)
            except redis.exceptions.NoScriptError:
                if attempt:
                    raise
                self.load()
        raise AssertionError("unreachable")


def execute(pipe) -> list:
    """Run a pipeline, raising its first command error."""
    return pipe.execute(raise_on_error=True)
