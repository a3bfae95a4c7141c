"""The near-duplicate index on a Redis Cluster: band buckets on every slot, claims decided per document.

The ``redis`` backend decides a document's fate in one Lua script over all its band buckets, which
needs every key in one slot. Here the (band, bucket) sets spread over 256 slot groups and the
documents' state over 1,024, so no script can see all of a document's buckets at once. Claims
stay correct by a protocol instead, with the same rule as the other backends
(:mod:`refinery.dedup.claims`): **a document is removed only as a near-duplicate (verified
estimated Jaccard ≥ threshold) of a kept document, and of two racing near-duplicates the one
decided first is kept.**

Every document gets a *ticket*, its first-come index: one ``INCRBY`` per chunk hands out a
consecutive range, so within a batch tickets follow reading order. A document's claim then runs:

1. **register**: its signature and key (``{ns:fuzzy:<g>}:docs``) and its state *pending*
   (``{ns:fuzzy:<g>}:state``; ``g`` = (ticket // :data:`TICKET_BLOCK`) mod :data:`SLOT_GROUPS`,
   so a chunk's state is a few multi-field writes) are written, then for each band the ticket is
   added to the bucket's set and the set read back, atomically per bucket (a script per bucket
   group: the sets carry one of :data:`BUCKET_GROUPS` hash tags, so a chunk's 13 × 500 lookups
   are at most 256 calls, spread over every shard). Of two documents that share a bucket, at
   least one therefore sees the other (whichever was added second reads a set holding the first);
2. **verify** every candidate against its stored signature; only verified neighbours matter;
3. **probe** each verified neighbour in one script on its slot: its state (kept, pending, or
   gone), and where it is pending with a *larger* ticket, the prober's ticket goes into the
   neighbour's *inbox* (atomically with reading that it is pending);
4. **wait** for every pending neighbour with a *smaller* ticket to be decided (kept or gone);
5. **decide**: removed, naming the most similar kept neighbour (ties: the smallest key), if any
   verified neighbour is kept; otherwise kept by a compare-and-set script on its own slot, which
   succeeds only while its inbox holds no ticket it has not considered. New inbox tickets are
   smaller-ticket neighbours that registered after it looked: it waits for them and decides again.

Why no two kept documents are near-duplicates: take two verified neighbours X and Y, both kept.
By step 1 one of them, say X, saw the other. X's probe of Y found Y kept (then X was removed), gone
(then Y was not kept), pending with a smaller ticket (then X waited for Y's decision and, Y being
kept, was removed), or pending with a larger ticket (then X entered Y's inbox while Y was pending,
so Y's compare-and-set could only succeed after Y had waited for X, and X being kept, Y was
removed): each case contradicts both being kept. Waits only ever go from a larger ticket to a
smaller one, so they cannot form a cycle. Without a race the rule is exactly the other backends':
every earlier document is decided, and each document is compared with the kept ones.

Runs that die: each run holds a lease key (renewed by a thread, :data:`LEASE_S`); a document left
pending by a run whose lease expired is dropped from the state by whoever waits for it (a
compare-and-delete, so a slow-but-alive run finds its claim gone and fails instead of keeping a
document twice). Whatever else a killed run left (signatures, bucket entries) is withdrawn by its
partition's next run, as with every backend.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid

import numpy as np

from refinery.dedup.claims import digest
from refinery.dedup.lsh_index import (
    WITHDRAW_CHUNK_DOCS,
    FuzzyIndex,
    FuzzyOutcome,
    check_index_params,
    signature_bytes,
)
from refinery.dedup.redis_cluster import SLOT_GROUPS, IndexUnavailable, Scripts, execute, unavailable_as
from refinery.ids import doc_key

__all__ = ["CHUNK_DOCS", "LEASE_S", "ShardedFuzzyIndex"]

CHUNK_DOCS = 500  # documents per claim round: each step of the protocol is one pipeline per chunk
TICKET_BLOCK = 64  # consecutive tickets share a slot group, so a chunk's state is a few multi-field writes
BUCKET_GROUPS = 256  # hash tags of the bucket sets: a chunk's lookups are one script per group touched
LEASE_S = 30.0  # a run's lease; a dead run's pending documents are released this long after it died
WAIT_TIMEOUT_S = 900.0  # a neighbour pending this long while its run is alive is an error, not a wait

KEPT = b"k"

# KEYS: one bucket set of the group (it routes the call to the group's slot). ARGV: "add" or "rem",
# the group's key prefix, then records of 21 bytes: band (1 byte), bucket (8 raw bytes), ticket (12
# decimal digits); each names the set prefix .. band .. bucket, in the same slot as KEYS[1] (the
# group's hash tag). "add": per record SADD then SMEMBERS (atomic: of two documents sharing a bucket
# the later sees the earlier), returned joined by ','; "rem": SREM.
_BUCKETS = """
local out, blob, prefix = {}, ARGV[3], ARGV[2]
for at = 1, #blob, 21 do
  local key = prefix .. string.sub(blob, at, at + 8)
  local ticket = tostring(tonumber(string.sub(blob, at + 9, at + 20)))
  if ARGV[1] == 'add' then
    redis.call('SADD', key, ticket)
    out[#out + 1] = table.concat(redis.call('SMEMBERS', key), ',')
  else
    redis.call('SREM', key, ticket)
  end
end
return out
"""

# KEYS: a group's state hash, its docs hash, then the inboxes of ARGV's tickets. Forgets them.
_FORGET = """
for i = 1, #ARGV do
  redis.call('HDEL', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
  redis.call('DEL', KEYS[i + 2])
end
return #ARGV
"""

# KEYS: the neighbour's state hash and inbox. ARGV: its ticket, the prober's ticket.
_PROBE = """
local s = redis.call('HGET', KEYS[1], ARGV[1])
if not s then return '' end
if s ~= 'k' and tonumber(ARGV[1]) > tonumber(ARGV[2]) then redis.call('SADD', KEYS[2], ARGV[2]) end
return s
"""

# KEYS: a group's state hash, then the inbox of each document. ARGV: own pending value, then per
# document its ticket, how many tickets it considered, and those tickets. Per document returns
# {1} kept, {0} the claim is gone (abandoned or withdrawn), {2, new inbox tickets...}.
_KEEP = """
local out, a = {}, 2
for d = 2, #KEYS do
  local ticket, n = ARGV[a], tonumber(ARGV[a + 1])
  local seen = {}
  for i = a + 2, a + 1 + n do seen[ARGV[i]] = true end
  a = a + 2 + n
  local s = redis.call('HGET', KEYS[1], ticket)
  local row
  if s == 'k' then
    row = {1}
  elseif s ~= ARGV[1] then
    row = {0}
  else
    row = {2}
    for _, m in ipairs(redis.call('SMEMBERS', KEYS[d])) do
      if not seen[m] then row[#row + 1] = m end
    end
    if #row == 1 then
      redis.call('HSET', KEYS[1], ticket, 'k')
      redis.call('DEL', KEYS[d])
      row = {1}
    end
  end
  out[#out + 1] = row
end
return out
"""

# KEYS: the state hash and inbox of a document pending under a dead run. ARGV: ticket, pending value.
_ABANDON = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('DEL', KEYS[2])
  return 1
end
return 0
"""


class _Lease:
    """The run's lease key, renewed every third of :data:`LEASE_S` by a daemon thread."""

    def __init__(self, client, key: str, seconds: float):
        self._r, self.key, self.ms = client, key, int(seconds * 1000)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def hold(self) -> None:
        if self._thread is None:
            self._r.set(self.key, 1, px=self.ms)
            self._thread = threading.Thread(target=self._renew, name="dedup-lease", daemon=True)
            self._thread.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.ms / 3000):
            with contextlib.suppress(Exception):  # a lost node: the claims themselves report it
                self._r.set(self.key, 1, px=self.ms)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            with contextlib.suppress(Exception):
                self._r.delete(self.key)


class ShardedFuzzyIndex(FuzzyIndex):
    """Band buckets without hash tags, per-document state in :data:`SLOT_GROUPS` slot groups."""

    def __init__(self, client, namespace: str, params: dict, lease_s: float = LEASE_S):
        self._r = client
        self.namespace = namespace
        where = f"redis-cluster namespace {namespace!r}"
        with unavailable_as(f"opening the fuzzy index at {where}"):
            self._r.setnx(f"{namespace}:fuzzy:params", json.dumps(params, sort_keys=True))
            stored = json.loads(self._r.get(f"{namespace}:fuzzy:params"))
        check_index_params(stored, params, where)
        super().__init__(params)
        self.run_id = uuid.uuid4().hex[:16]
        self._pending = b"p" + self.run_id.encode()
        self._lease = _Lease(client, self._lease_key(self.run_id), lease_s)
        self._scripts = Scripts(
            client, probe=_PROBE, keep=_KEEP, abandon=_ABANDON, buckets=_BUCKETS, forget=_FORGET
        )
        self._sig_len = 4 * params["num_perm"]

    # -- key names ----------------------------------------------------------------------------
    def _tag(self, ticket: int) -> str:
        return f"{{{self.namespace}:fuzzy:{(ticket // TICKET_BLOCK) % SLOT_GROUPS}}}"

    def _state(self, ticket: int) -> str:
        return self._tag(ticket) + ":state"

    def _docs(self, ticket: int) -> str:
        return self._tag(ticket) + ":docs"

    def _inbox(self, ticket: int) -> str:
        return f"{self._tag(ticket)}:inbox:{ticket}"

    def _bucket_group(self, band: int, bucket: int) -> str:
        return f"{{{self.namespace}:fuzzy:b{((bucket & 0xFFFFFFFFFFFFFFFF) + band) % BUCKET_GROUPS}}}:"

    def _bucket_record(self, band: int, bucket: int, ticket: int) -> bytes:
        return bytes([band]) + (bucket & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little") + b"%012d" % ticket

    def _by_tag(self, tickets) -> dict[str, list[int]]:
        groups: dict[str, list[int]] = {}
        for t in tickets:
            groups.setdefault(self._tag(t), []).append(t)
        return groups

    def _bucket_script(self, mode: str, tickets: list[int], buckets: np.ndarray) -> list[set[int]]:
        """Run the bucket script for every (document, band), one call per bucket group; returns per
        document the tickets its buckets held after its own ``SADD`` ("add")."""
        groups: dict[str, list[tuple[int, bytes]]] = {}
        for i, (t, row) in enumerate(zip(tickets, buckets.tolist(), strict=True)):
            for band, b in enumerate(row):
                groups.setdefault(self._bucket_group(band, b), []).append(
                    (i, self._bucket_record(band, b, t))
                )
        order = list(groups.items())

        def build(pipe):
            for prefix, records in order:
                route = prefix.encode() + records[0][1][:9]
                blob = b"".join(r for _, r in records)
                self._scripts.queue(pipe, "buckets", [route], [mode, prefix, blob])

        seen: list[set[int]] = [set() for _ in tickets]
        for (_, records), replies in zip(order, self._scripts.run(build), strict=True):
            for (i, _), reply in zip(records, replies or [], strict=False):
                if reply:
                    seen[i].update(map(int, reply.split(b",")))
        return seen

    def _members(self, source: str) -> str:
        return f"{{{self.namespace}:fuzzy:m:{source}}}"

    def _lease_key(self, run_id: str | bytes) -> str:
        if isinstance(run_id, bytes):
            run_id = run_id.decode()
        return f"{self.namespace}:fuzzy:run:{run_id}"

    # -- claims -------------------------------------------------------------------------------
    def claim(self, source: str, ids: list[str], signatures: np.ndarray) -> FuzzyOutcome:
        owners: list[str | None] = [None] * len(ids)
        similarity = np.zeros(len(ids), dtype=np.float64)
        with unavailable_as(f"claiming {len(ids)} documents of {source!r} in the fuzzy index"):
            self._lease.hold()
            for lo in range(0, len(ids), CHUNK_DOCS):
                hi = min(len(ids), lo + CHUNK_DOCS)
                chunk_owners, chunk_equal = self._claim_chunk(source, ids[lo:hi], signatures[lo:hi])
                owners[lo:hi] = chunk_owners
                similarity[lo:hi] = chunk_equal / self.params["num_perm"]
        return FuzzyOutcome(owners, similarity)

    def _claim_chunk(self, source: str, ids: list[str], signatures: np.ndarray):
        n = len(ids)
        sigs = np.ascontiguousarray(signatures, dtype="<u4")
        buckets = self.buckets(sigs) if n else np.zeros((0, self.bands), np.int64)
        first = int(self._r.incrby(f"{self.namespace}:fuzzy:ticket", n)) - n + 1
        tickets = list(range(first, first + n))
        self._step("ticketed")
        keys = [doc_key(source, d) for d in ids]
        self._r.sadd(self._members(source), *tickets)  # first: a killed run's next run finds them

        values = {
            t: sig.tobytes() + key.encode("utf-8", "surrogatepass")
            for t, key, sig in zip(tickets, keys, sigs, strict=True)
        }

        def register(pipe):
            for tag, group in self._by_tag(tickets).items():
                pipe.hset(tag + ":docs", mapping={t: values[t] for t in group})
                pipe.hset(tag + ":state", mapping=dict.fromkeys(group, self._pending))

        execute(self._build(register))
        self._step("registered")
        seen = self._bucket_script("add", tickets, buckets)
        self._step("looked")
        # In-chunk neighbours by equal buckets (the chunk registered in ticket order, so the later
        # one saw the earlier; both are decided here in ticket order).
        for band in range(self.bands):
            by_bucket: dict[int, list[int]] = {}
            for i, b in enumerate(buckets[:, band].tolist()):
                by_bucket.setdefault(b, []).append(i)
            for members in by_bucket.values():
                if len(members) > 1:
                    for i in members:
                        seen[i].update(tickets[j] for j in members)
        for i, t in enumerate(tickets):
            seen[i].discard(t)

        # Verify every candidate against its stored signature (the chunk's own are known here).
        local = {t: (sigs[i], keys[i]) for i, t in enumerate(tickets)}
        known = dict(local)
        self._fetch_docs({c for s in seen for c in s} - known.keys(), known)
        need = self.min_equal
        verified: list[dict[int, int]] = []  # per document: neighbour ticket -> equal positions
        # Per document: the candidates below the threshold and their equal positions. A kept
        # document's similarity is the best of the earlier ones that are kept (as the local index
        # reports it), chosen once the chunk is decided: not the best of every candidate, whose
        # value would depend on where the chunks are cut (a later document of the same chunk counted).
        below: list[dict[int, int]] = []
        for i in range(n):
            cands = [c for c in seen[i] if c in known]
            neighbours: dict[int, int] = {}
            unverified: dict[int, int] = {}
            if cands:
                equal = np.count_nonzero(np.stack([known[c][0] for c in cands]) == sigs[i], axis=1)
                for c, e in zip(cands, equal.tolist(), strict=True):
                    if e >= need:
                        neighbours[c] = e
                    elif e > 0:
                        unverified[c] = e
            verified.append(neighbours)
            below.append(unverified)

        state: dict[int, bytes] = {}  # foreign neighbours: b"k", b"" (gone) or a pending value
        self._probe(tickets, [{c for c in v if c not in local} for v in verified], state)
        self._step("probed")
        return self._decide(source, tickets, keys, verified, below, local, known, state)

    def _decide(self, source, tickets, keys, verified, below, local, known, state):
        """Decide the chunk in ticket order, in waves: a document is decided once every neighbour
        with a smaller ticket is decided; keeps are compare-and-set against the inbox."""
        n = len(tickets)
        position = {t: i for i, t in enumerate(tickets)}
        decided: dict[int, bool] = {}  # chunk position -> kept
        owners: list[str | None] = [None] * n
        equal_out = np.zeros(n, dtype=np.int64)
        considered: list[set[int]] = [set(v) for v in verified]
        while len(decided) < n:
            waits = {
                c
                for i in range(n)
                if i not in decided
                for c in verified[i]
                if c not in local and c < tickets[i] and state.get(c, b"") not in (KEPT, b"")
            }
            if waits:
                self._wait(waits, state)
            keeps, drops = [], []
            for i in range(n):
                if i in decided:
                    continue
                earlier_open = [c for c in verified[i] if c in local and c < tickets[i]
                                and position[c] not in decided]  # fmt: skip
                if earlier_open or any(
                    c not in local and c < tickets[i] and state.get(c, b"") not in (KEPT, b"")
                    for c in verified[i]
                ):
                    continue
                kept = [
                    (e, known[c][1])
                    for c, e in verified[i].items()
                    if (decided.get(position[c]) if c in local else state.get(c) == KEPT)
                ]
                if kept:
                    top = max(e for e, _ in kept)
                    owners[i] = min(k for e, k in kept if e == top)
                    equal_out[i] = top
                    drops.append(i)
                else:
                    keeps.append(i)
            for i in drops:
                decided[i] = False
            if drops:
                self._remove([tickets[i] for i in drops], [local[tickets[i]][0] for i in drops], source)
            results = self._keep([tickets[i] for i in keeps], [considered[i] for i in keeps]) if keeps else []
            new_tickets: set[int] = set()
            for i, result in zip(keeps, results, strict=True):
                status = int(result[0])
                if status == 1:
                    decided[i] = True
                elif status == 0:
                    raise IndexUnavailable(
                        f"the fuzzy claim of {keys[i]} was released while its run was deciding it (its lease "
                        f"of {self._lease.ms / 1000:.0f} s expired: the run stalled or lost the index)"
                    )
                else:  # smaller-ticket neighbours that registered after this document looked
                    fresh = {int(m) for m in result[1:]}
                    considered[i] |= fresh
                    new_tickets |= fresh
                    for c in fresh:
                        verified[i].setdefault(c, 0)
            if new_tickets:
                self._fetch_docs(new_tickets - known.keys(), known)
                for i in keeps:
                    if i in decided:
                        continue
                    for c in [c for c, e in verified[i].items() if e == 0]:
                        e = int(np.count_nonzero(known[c][0] == local[tickets[i]][0])) if c in known else 0
                        if e >= self.min_equal:
                            verified[i][c] = e
                        else:  # gone already (its signature withdrawn), or not a neighbour after all
                            del verified[i][c]
                            if e:
                                below[i][c] = e
                self._poll(new_tickets, state)
        for i, kept in decided.items():
            if kept:
                equal_out[i] = max(
                    (
                        e
                        for c, e in below[i].items()
                        if c < tickets[i] and self._kept_earlier(c, local, position, decided, state)
                    ),
                    default=0,
                )
        return owners, equal_out

    @staticmethod
    def _kept_earlier(ticket: int, local: dict, position: dict, decided: dict, state: dict) -> bool:
        """Whether a candidate with a smaller ticket counts for a kept document's similarity: one of
        the chunk that was kept, or an indexed document of an earlier chunk or run (dropped ones
        leave the index; one probed is counted only when kept)."""
        if ticket in local:
            return bool(decided.get(position[ticket]))
        return state.get(ticket, KEPT) == KEPT

    # -- protocol steps, one pipeline each ----------------------------------------------------------
    def _step(self, name: str) -> None:
        """Called after each step of a chunk's claim ("ticketed", "registered", "looked", "probed"):
        a seam where tests hold one claimant to force an interleaving."""

    def _build(self, fill):
        pipe = self._r.pipeline()
        fill(pipe)
        return pipe

    def _fetch_docs(self, wanted: set[int], known: dict) -> None:
        if not wanted:
            return
        groups = self._by_tag(sorted(wanted))
        replies = execute(self._build(lambda p: [p.hmget(tag + ":docs", g) for tag, g in groups.items()]))
        for t, v in zip(
            [t for g in groups.values() for t in g], [v for r in replies for v in r], strict=True
        ):
            if v is not None:
                sig = np.frombuffer(v[: self._sig_len], dtype="<u4")
                known[t] = (sig, v[self._sig_len :].decode("utf-8", "surrogatepass"))

    def _probe(self, tickets: list[int], foreign: list[set[int]], state: dict) -> None:
        pairs = [(t, c) for t, cs in zip(tickets, foreign, strict=True) for c in sorted(cs)]
        if not pairs:
            return

        def build(pipe):
            for t, c in pairs:
                self._scripts.queue(pipe, "probe", [self._state(c), self._inbox(c)], [c, t])

        for (_, c), s in zip(pairs, self._scripts.run(build), strict=True):
            s = s or b""
            if state.get(c) != KEPT:
                state[c] = s

    def _poll(self, wanted: set[int], state: dict) -> None:
        groups = self._by_tag(sorted(wanted))
        replies = execute(self._build(lambda p: [p.hmget(tag + ":state", g) for tag, g in groups.items()]))
        for t, v in zip(
            [t for g in groups.values() for t in g], [v for r in replies for v in r], strict=True
        ):
            state[t] = v or b""

    def _wait(self, waits: set[int], state: dict) -> None:
        """Until every ticket in ``waits`` is kept or gone; documents of dead runs are released."""
        start, pause = time.monotonic(), 0.001
        open_ = set(waits)
        while True:
            self._poll(open_, state)
            open_ = {t for t in open_ if state[t] not in (KEPT, b"")}
            if not open_:
                return
            runs = sorted({state[t][1:] for t in open_})
            alive = execute(self._build(lambda p, runs=runs: [p.exists(self._lease_key(r)) for r in runs]))
            dead = {r for r, a in zip(runs, alive, strict=True) if not a}
            release = [t for t in open_ if state[t][1:] in dead]
            if release:

                def build(pipe, release=release):
                    for t in release:
                        self._scripts.queue(pipe, "abandon", [self._state(t), self._inbox(t)], [t, state[t]])

                self._scripts.run(build)
                continue
            if time.monotonic() - start > WAIT_TIMEOUT_S:
                raise TimeoutError(
                    f"fuzzy claims waited {WAIT_TIMEOUT_S:.0f} s for {len(open_)} neighbours whose runs are "
                    f"alive but undecided (tickets {sorted(open_)[:5]}...)"
                )
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    def _keep(self, tickets: list[int], considered: list[set[int]]) -> list:
        seen_of = dict(zip(tickets, considered, strict=True))
        groups = self._by_tag(tickets)

        def build(pipe):
            for tag, group in groups.items():
                args: list = [self._pending]
                for t in group:
                    args += [t, len(seen_of[t]), *sorted(seen_of[t])]
                self._scripts.queue(pipe, "keep", [tag + ":state", *(self._inbox(t) for t in group)], args)

        result = dict(
            zip(
                [t for g in groups.values() for t in g],
                [r for rs in self._scripts.run(build) for r in rs],
                strict=True,
            )
        )
        return [result[t] for t in tickets]

    def _remove(self, tickets: list[int], sigs: list[np.ndarray], source: str | None) -> None:
        """Delete documents' state, signature, inbox and bucket entries (their member entries too,
        when ``source`` is given)."""
        buckets = self.buckets(np.stack(sigs)) if sigs else np.zeros((0, self.bands), np.int64)

        groups = self._by_tag(tickets)

        def build(pipe):
            for tag, group in groups.items():
                keys = [tag + ":state", tag + ":docs", *(self._inbox(t) for t in group)]
                self._scripts.queue(pipe, "forget", keys, group)

        if tickets:
            self._scripts.run(build)
            self._bucket_script("rem", tickets, buckets)
        if source is not None and tickets:
            self._r.srem(self._members(source), *tickets)

    # -- the run's life cycle -----------------------------------------------------------------------
    def withdraw(self, source: str) -> set[tuple[str, bytes]]:
        removed: set[tuple[str, bytes]] = set()
        members = self._members(source)
        with unavailable_as(f"withdrawing the fuzzy claims of {source!r}"):
            while True:
                tickets = sorted(int(t) for t in self._r.srandmember(members, WITHDRAW_CHUNK_DOCS))
                if not tickets:
                    return removed
                known: dict = {}
                self._fetch_docs(set(tickets), known)
                state: dict = {}
                self._poll(set(tickets), state)
                present = [t for t in tickets if t in known]
                self._remove(present, [known[t][0] for t in present], None)
                self._r.srem(members, *tickets)
                cut = len(source) + 1
                removed.update(
                    (known[t][1][cut:], digest(signature_bytes(known[t][0])))
                    for t in present
                    if state[t] == KEPT
                )

    def count(self) -> int:
        """Kept and pending documents."""
        with unavailable_as("counting the fuzzy index"):
            return int(
                sum(
                    execute(
                        self._build(
                            lambda p: [
                                p.hlen(f"{{{self.namespace}:fuzzy:{g}}}:state") for g in range(SLOT_GROUPS)
                            ]
                        )
                    )
                )
            )

    def close(self) -> None:
        self._lease.release()
        self._r.close()
