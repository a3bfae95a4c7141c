"""The exact-duplicate index on a Redis Cluster, spread over every shard.

A content hash's claim is one ``HSETNX`` in the hash of its slot group
(``{<ns>:exact:<group>}:claims``, :mod:`refinery.dedup.redis_cluster`): atomic on its own, so the
documented rule holds unchanged per hash: the claim that reaches the index first wins. Hashes are
independent of each other, so nothing needs to be atomic across slots, and a batch's claims go out
as one pipeline over every node.

Withdrawal needs each source's hashes. They are added to ``{<ns>:exact:m:<source>}`` *before* the
claims are made (one call), so a run killed between the two leaves at worst a member whose claim
it never won; withdrawal deletes a claim only where its owner is the withdrawing source (a
compare-and-delete script on the claim's slot), so such members are harmless.
"""

from __future__ import annotations

from refinery.dedup.exact_index import WITHDRAW_CHUNK, ExactIndex
from refinery.dedup.keys import doc_key
from refinery.dedup.redis_cluster import SLOT_GROUPS, Scripts, execute, slot_group, unavailable_as

FORMAT = "sharded-1"

# KEYS: the claims hash of one group. ARGV: the hash, "<source>/". Deletes the claim when the
# source owns it; returns the owner's document id, or false.
_WITHDRAW_ONE = """
local owner = redis.call('HGET', KEYS[1], ARGV[1])
if owner and string.sub(owner, 1, #ARGV[2]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  return string.sub(owner, #ARGV[2] + 1)
end
return false
"""


class ShardedExactIndex(ExactIndex):
    """Claims spread over :data:`SLOT_GROUPS` hashes, each source's hashes in a set of its own."""

    def __init__(self, client, namespace: str):
        self._r = client
        self.namespace = namespace
        where = f"redis-cluster namespace {namespace!r}"
        with unavailable_as(f"opening the exact index at {where}"):
            self._r.setnx(f"{namespace}:exact:format", FORMAT)
            stored = self._r.get(f"{namespace}:exact:format").decode()
        if stored != FORMAT:
            from refinery.dedup.errors import format_error

            raise format_error("exact", where, f"format {stored}")
        self._scripts = Scripts(client, withdraw=_WITHDRAW_ONE)

    def _claims(self, group: int) -> str:
        return f"{{{self.namespace}:exact:{group}}}:claims"

    def _members(self, source: str) -> str:
        return f"{{{self.namespace}:exact:m:{source}}}"

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        if not items:
            return {}
        with unavailable_as(f"claiming {len(items)} hashes of {source!r}"):
            self._r.sadd(self._members(source), *(h for h, _ in items))
            pipe = self._r.pipeline()
            for h, d in items:
                key = self._claims(slot_group(h))
                pipe.hsetnx(key, h, doc_key(source, d))
                pipe.hget(key, h)  # same connection, after the HSETNX: the winner, whoever it is
            replies = execute(pipe)
        return {h: replies[2 * i + 1].decode() for i, (h, _) in enumerate(items)}

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        if not hashes:
            return {}
        with unavailable_as(f"looking up {len(hashes)} hashes"):
            pipe = self._r.pipeline()
            for h in hashes:
                pipe.hget(self._claims(slot_group(h)), h)
            values = execute(pipe)
        return {h: v.decode() for h, v in zip(hashes, values, strict=True) if v is not None}

    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        members = self._members(source)
        prefix = source + "/"
        with unavailable_as(f"withdrawing the exact claims of {source!r}"):
            while True:
                hashes = self._r.srandmember(members, WITHDRAW_CHUNK)
                if not hashes:
                    return removed

                def build(pipe, hashes=hashes):
                    for h in hashes:
                        self._scripts.queue(pipe, "withdraw", [self._claims(slot_group(h))], [h, prefix])

                owners = self._scripts.run(build)
                self._r.srem(members, *hashes)  # after the claims: a kill in between leaves members only
                removed.update((d.decode(), h) for h, d in zip(hashes, owners, strict=True) if d)

    def count(self) -> int:
        with unavailable_as("counting the exact index"):
            pipe = self._r.pipeline()
            for group in range(SLOT_GROUPS):
                pipe.hlen(self._claims(group))
            return int(sum(execute(pipe)))

    def close(self) -> None:
        self._r.close()
