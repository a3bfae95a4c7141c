"""The exact-duplicate index on a Redis Cluster, spread over every shard.

A content hash's claim is one ``HSETNX`` in the hash of its slot group
(``{<ns>:exact:<group>}:claims``, one of :data:`EXACT_GROUPS`): atomic on its own, so the
documented rule holds unchanged per hash: the claim that reaches the index first wins. Hashes are
independent of each other, so nothing needs to be atomic across slots. A batch's claims are one
script call per group it touches (``HSETNX``, then ``HGET`` of the winner where it lost), sent as
one pipeline over every node.

Withdrawal needs each source's hashes. They are added to ``{<ns>:exact:m:<source>}`` *before* the
claims are made (one call), so a run killed between the two leaves at worst a member whose claim
it never won; withdrawal deletes a claim only where its owner is the withdrawing source (a
compare-and-delete script on the claim's slot), so such members are harmless.
"""

from __future__ import annotations

from refinery.dedup.exact_index import WITHDRAW_CHUNK, ExactIndex
from refinery.dedup.redis_cluster import Scripts, execute, slot_group, unavailable_as

FORMAT = "sharded-1"
EXACT_GROUPS = 256  # hash-tag groups of the claims: a batch is at most this many script calls

# KEYS: the claims hash of one group. ARGV: "<source>/", then hash, doc id pairs. Returns the owner
# key of every hash, in order.
_CLAIM = """
local out = {}
for i = 2, #ARGV, 2 do
  local key = ARGV[1] .. ARGV[i + 1]
  if redis.call('HSETNX', KEYS[1], ARGV[i], key) == 1 then
    out[#out + 1] = key
  else
    out[#out + 1] = redis.call('HGET', KEYS[1], ARGV[i])
  end
end
return out
"""

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
    """Claims spread over :data:`EXACT_GROUPS` hashes, each source's hashes in a set of its own."""

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
        self._scripts = Scripts(client, withdraw=_WITHDRAW_ONE, claim=_CLAIM)

    def _claims(self, group: int) -> str:
        return f"{{{self.namespace}:exact:{group}}}:claims"

    def _claims_of(self, h: bytes) -> str:
        return self._claims(slot_group(h, EXACT_GROUPS))

    def _members(self, source: str) -> str:
        return f"{{{self.namespace}:exact:m:{source}}}"

    def claim(self, source: str, items: list[tuple[bytes, str]]) -> dict[bytes, str]:
        if not items:
            return {}
        with unavailable_as(f"claiming {len(items)} hashes of {source!r}"):
            self._r.sadd(self._members(source), *(h for h, _ in items))
            groups: dict[str, list[tuple[bytes, str]]] = {}
            for h, d in items:
                groups.setdefault(self._claims_of(h), []).append((h, d))

            def build(pipe):
                for key, pairs in groups.items():
                    self._scripts.queue(
                        pipe, "claim", [key], [source + "/", *(x for pair in pairs for x in pair)]
                    )

            replies = self._scripts.run(build)
        owners: dict[bytes, str] = {}
        for pairs, reply in zip(groups.values(), replies, strict=True):
            owners.update({h: o.decode() for (h, _), o in zip(pairs, reply, strict=True)})
        return owners

    def lookup(self, hashes: list[bytes]) -> dict[bytes, str]:
        if not hashes:
            return {}
        with unavailable_as(f"looking up {len(hashes)} hashes"):
            pipe = self._r.pipeline()
            for h in hashes:
                pipe.hget(self._claims_of(h), h)
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
                        self._scripts.queue(pipe, "withdraw", [self._claims_of(h)], [h, prefix])

                owners = self._scripts.run(build)
                self._r.srem(members, *hashes)  # after the claims: a kill in between leaves members only
                removed.update((d.decode(), h) for h, d in zip(hashes, owners, strict=True) if d)

    def count(self) -> int:
        with unavailable_as("counting the exact index"):
            pipe = self._r.pipeline()
            for group in range(EXACT_GROUPS):
                pipe.hlen(self._claims(group))
            return int(sum(execute(pipe)))

    def close(self) -> None:
        self._r.close()
