"""A model stage on long-lived model actors fed by decode tasks: the path of every pool that asks
for GPUs (and of ``dispatch="actors"``), with no way to deadlock on the cluster's CPUs.

**Why not Ray Data.** The earlier path was Ray Data's ``map_batches`` (decode tasks, then an
``ActorPoolStrategy`` pool). Ray Data starts the pool's actors before any task and keeps them for the
whole run, so the decode tasks get only the CPUs the actors leave, **on some node**. The pool was
sized against the cluster's total CPUs (:meth:`refinery.models.pool.ModelPool.fitted`), not per
node: on two nodes of one CPU, two actors of 2/3 CPU left 1/3 CPU per node and a decode task asked
for 2/3, so no decode task could ever start and the run hung with the actors idle (RESULTS.md,
"The GPU path without the hang"; Ray's own issue ray-project/ray#44687, "Dataset hangs if you
launch actors on all CPUs"). A dead actor in a fixed-size Ray Data pool can hang the same way
(ray-project/ray#62746).

**What runs instead** (:func:`actor_reports`):

- ``min(pool.actors, slices)`` actors (:class:`ModelHost`), each asking for ``num_gpus`` (fractional
  allowed: 0.25 puts four on one GPU) and ``cpus_per_actor``; each loads the model once in its
  ``__init__`` (never on the driver) and is fed one decoded slice at a time by this process, the
  next going to whichever actor finishes first;
- decode tasks (CPU only) run ahead of the actors, at most :func:`ahead` slices decoded or
  decoding at once (bounded memory: decoded video frames are large), each asking for the CPUs the
  actors leave free **on a node where they are placed** (the request is cut to the largest free
  share there, and no decode task is sent when the actors hold every CPU);
- progress never depends on a decode task being scheduled: an actor that is idle while no decoded
  slice is ready decodes the next undecoded slice itself (work that would otherwise wait), and after
  :data:`STEAL_AFTER_S` without any decode finishing it also takes a slice whose decode task has
  not come back (a task held up by another job's actors on the same cluster); its late result is
  dropped. So the GPU never waits while a decoded slice is ready, and never waits forever;
- a killed actor is restarted by Ray (``max_restarts``: :data:`RESTARTS`), the model loaded again in
  the new process, but its call is **not** retried there: the slice goes back to the front of the
  queue (its decoded rows kept) for the first idle actor, so the run does not wait on the restart,
  and the restarted actor rejoins once it reports the node it landed on, **from which the decode
  tasks are sized again** (decode tasks already sent at a size that no longer fits are cancelled
  and their slices sent again). Why: Ray places a restart wherever there is room; sized once from
  where the actors first landed, a decode task could fit on no node after the restart and every
  waiting slice was taken back only after :data:`STEAL_AFTER_S` (49.7 s for a run of 7.5 s,
  benchmarks/RESULTS.md, "The GPU path after an actor restart"). A retried slice rewrites the same
  output names. Bounded: a slice that kills its actor :data:`RESTARTS` + 1 times (an input that runs
  it out of memory) fails the run with Ray's error instead of killing actors forever. A decode task
  whose worker dies is retried by Ray (``max_retries``).

Each call returns the per-batch reports the actor class gives (``PoolActor`` writes its outputs to
the scratch folder; ``ModelActor`` returns them), so the callers in
:mod:`refinery.engine.model_pool` collect them as before.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

#: An idle actor takes over a decode task that has not come back after this long with no decode
#: finishing anywhere (only when no undecoded slice is left to take).
STEAL_AFTER_S = 10.0
#: Restarts of a model actor, and retries of a call on it, before the run fails (as a slice task's).
RESTARTS = 4
#: Decode tasks sent ahead per actor beyond the slices being inferred (the free CPUs may raise it).
AHEAD_PER_ACTOR = 2
#: How often a restarting actor is asked where it is (Ray answers "unavailable" until it is up).
REJOIN_POLL_S = 0.2


class PoolDoesNotFit(ValueError):
    """No node of the cluster can hold one model actor: Ray would wait for it forever."""


@dataclass
class PoolShape:
    """What the pool was given on this cluster: the requests as sent, and what the run did."""

    actors: int
    cpus_per_actor: float
    num_gpus: float
    decode_cpus: float  # per decode task (0: the actors decode every slice themselves)
    ahead: int
    decoded_by_tasks: int = 0
    decoded_by_actors: int = 0
    restarts: int = 0  # model actors lost mid-slice (each restarted by Ray, its slice run again)
    resized: int = 0  # times the decode tasks were sized again from where the actors are now

    def describe(self) -> dict:
        return {
            "cpus_per_actor": round(self.cpus_per_actor, 3),
            "decode_cpus": round(self.decode_cpus, 3),
            "decode_ahead": self.ahead,
            "slices_decoded_by_tasks": self.decoded_by_tasks,
            "slices_decoded_by_actors": self.decoded_by_actors,
            "actor_restarts": self.restarts,
            "decode_resized": self.resized,
        }


def alive_nodes() -> list[dict]:
    """Each alive node's ``{"id", "CPU", "GPU"}`` as the cluster reports its totals."""
    import ray

    return [
        {
            "id": n["NodeID"],
            "CPU": float(n["Resources"].get("CPU", 0.0)),
            "GPU": float(n["Resources"].get("GPU", 0.0)),
        }
        for n in ray.nodes()
        if n.get("Alive")
    ]


def fit_actor(pool: Any, nodes: list[dict]) -> Any:
    """``pool`` with its actor's request cut to fit the largest node that can hold it.

    An actor's GPUs must be on one node: none with ``num_gpus`` free raises :class:`PoolDoesNotFit`
    (Ray would queue it forever). Its CPUs are a scheduling count (a fraction only shares the
    cores), so a request larger than every such node's CPUs is cut to the largest; the decode
    tasks are sized later, from where the actors landed (:func:`decode_share`)."""
    hosts = [n for n in nodes if n["GPU"] + 1e-9 >= pool.num_gpus and n["CPU"] > 0]
    if not hosts:
        shapes = ", ".join(f"{n['CPU']:g} CPU / {n['GPU']:g} GPU" for n in nodes) or "no alive node"
        raise PoolDoesNotFit(
            f"a model actor asks for {pool.num_gpus:g} GPU and no node of the Ray cluster has it "
            f"({shapes}); set compute.num_gpus to what one node holds (0 runs on CPUs)"
        )
    largest = max(n["CPU"] for n in hosts)
    if pool.cpus_per_actor > largest:
        return replace(pool, cpus_per_actor=largest)
    return pool


def free_cpus(nodes: list[dict], actor_nodes: list[str], cpus_per_actor: float) -> list[float]:
    """Each node's CPUs left once the actors placed on it (``actor_nodes``, one node id per actor)
    hold theirs."""
    return [n["CPU"] - cpus_per_actor * actor_nodes.count(n["id"]) for n in nodes]


def decode_share(pool: Any, nodes: list[dict], actor_nodes: list[str]) -> float:
    """The CPUs one decode task asks for: ``pool.decode_cpus``, cut to the largest share the
    actors leave free on one node (0: they hold every CPU, and decode in the actors)."""
    room = max(free_cpus(nodes, actor_nodes, pool.cpus_per_actor), default=0.0)
    if room < 0.01:
        return 0.0
    return min(pool.decode_cpus, room)


def ahead(actors: int, decode_cpus: float, nodes: list[dict], actor_nodes: list[str], cpus: float) -> int:
    """How many slices may be decoding or decoded and waiting at once: two per actor, or as many
    decode tasks as the free CPUs run side by side, up to four per actor (decoded frames wait in
    the object store: a bound on them is a bound on its memory)."""
    if decode_cpus <= 0:
        return 0
    free = sum(max(f, 0.0) for f in free_cpus(nodes, actor_nodes, cpus))
    slots = math.floor(free / decode_cpus + 1e-9)
    return max(AHEAD_PER_ACTOR * actors, min(slots, 2 * AHEAD_PER_ACTOR * actors))


def expected_nodes(pool: Any, nodes: list[dict], count: int) -> list[str]:
    """Where ``count`` actors are expected to land, spread one per node in turn over the nodes
    with room (what Ray's SPREAD does on an idle cluster): the decode tasks start at once, sized
    from it, and are sized again from where the actors really are once all have started."""
    room = {n["id"]: [n["CPU"], n["GPU"]] for n in nodes}
    placed: list[str] = []
    while len(placed) < count:
        before = len(placed)
        for node_id, (cpus, gpus) in room.items():
            if len(placed) < count and cpus + 1e-9 >= pool.cpus_per_actor and gpus + 1e-9 >= pool.num_gpus:
                room[node_id] = [cpus - pool.cpus_per_actor, gpus - pool.num_gpus]
                placed.append(node_id)
        if len(placed) == before:  # the rest cannot be placed now: they wait, holding nothing
            break
    return placed


class ModelHost:
    """One model actor: ``actor(stage_payload, *args)`` built once (the model loaded in this
    process), then run on a slice's decoded rows in batches of ``batch_size``."""

    def __init__(self, actor: type, args: tuple, decode: Callable, stage_payload: bytes, batch_size: int):
        import os

        import ray

        from refinery.models import loads

        self.loads_before = loads.total()  # a restarted actor is a new process: counted anew
        self.decode, self.stage_payload, self.batch_size = decode, stage_payload, batch_size
        self.actor = actor(stage_payload, *args)
        self.node = ray.get_runtime_context().get_node_id()
        self.worker = f"{self.node}:{os.getpid()}"

    def ready(self) -> str:
        """The node it runs on (the driver sizes the decode tasks from it); asked again after a
        restart, it answers from the new process: where the actor is now."""
        return self.node

    def run(self, frame: Any) -> dict[str, list]:
        """A slice decoded by a decode task."""
        return self._infer(frame)

    def decode_and_run(self, raw_slice: bytes) -> dict[str, list]:
        """A slice no decode task has brought: decoded here, on this actor's CPUs."""
        return self._infer(self.decode({"slice": [raw_slice]}, self.stage_payload))

    def _infer(self, frame: Any) -> dict[str, list]:
        out: dict[str, list] = {}
        for start in range(0, len(frame), self.batch_size):
            report = self.actor(frame.iloc[start : start + self.batch_size].reset_index(drop=True))
            if hasattr(report, "to_dict"):  # a DataFrame of columns
                report = report.to_dict(orient="list")
            if "loads" in report:
                report["loads"] = [int(n) - self.loads_before for n in report["loads"]]
            for key, values in report.items():
                out.setdefault(key, []).extend(values)
        return out


def decode_one(decode: Callable, stage_payload: bytes, raw_slice: bytes) -> Any:
    """A decode task: one slice's rows read and decoded, for an actor to take."""
    return decode({"slice": [raw_slice]}, stage_payload)


def actor_reports(
    slices: list[Any],
    stage_payload: bytes,
    pool: Any,
    actor: type,
    args: tuple,
    decode: Callable,
    steal_after_s: float = STEAL_AFTER_S,
) -> tuple[list[dict], PoolShape]:
    """The filled ``slices`` through the model on actors of ``pool``'s shape (see the module's
    docstring); one report row per batch, and the shape the run used. ``actor`` and ``decode`` are
    model_pool's actor class and ``decode_slices`` (passed in: no import cycle); ``args`` follow
    the stage's payload in the actor's constructor."""
    import pickle

    import ray

    nodes = alive_nodes()
    pool = fit_actor(pool, nodes)
    count = max(1, min(pool.actors, len(slices)))
    from ray.exceptions import ActorUnavailableError, RayActorError

    host = ray.remote(
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.num_gpus or 0,
        max_restarts=RESTARTS,
        max_task_retries=0,  # a lost call comes back here: its slice goes to the first idle actor
        scheduling_strategy="SPREAD",
    )(ModelHost)
    shared = ray.put(stage_payload)  # once in the object store, for the decode tasks
    # the payload inline (a few KB): a restarted actor finds it in its creation spec
    hosts = [host.remote(actor, args, decode, stage_payload, pool.batch_size) for _ in range(count)]
    starting = {h.ready.remote(): i for i, h in enumerate(hosts)}  # ready call -> actor number
    feeder = _Feeder(pool, nodes, count, expected_nodes(pool, nodes, count), shared, decode)
    queue = deque(_Slot(pickle.dumps(s)) for s in slices)
    running: dict[Any, tuple[int, _Slot, bool]] = {}  # call -> (actor, its slot, decoded by the actor)
    idle: list[int] = []
    rejoin: dict[int, float] = {}  # a restarting actor -> when to ask again where it is
    rows: list[dict] = []
    try:
        while queue or feeder.decoding or feeder.decoded or running:
            now = time.monotonic()
            for i in [i for i, when in rejoin.items() if when <= now]:
                del rejoin[i]
                starting[hosts[i].ready.remote()] = i
            feeder.send(queue)
            while idle and feeder.decoded:  # a decoded slice to every idle actor first
                slot, i = feeder.decoded.popleft(), idle.pop()
                running[hosts[i].run.remote(slot.ref)] = (i, slot, False)
            while idle and (queue or feeder.stale(steal_after_s)):
                # Nothing decoded for an idle actor: it decodes a slice itself, so no run waits on a
                # decode task that cannot be scheduled.
                slot = queue.popleft() if queue else feeder.take_back()
                i = idle.pop()
                running[hosts[i].decode_and_run.remote(slot.raw)] = (i, slot, True)
            if not (idle or running or starting or rejoin):
                raise RuntimeError("no model actor left to run the remaining slices")
            patience = feeder.patience(steal_after_s) if idle and feeder.decoding else None
            if rejoin:
                soonest = max(0.0, min(rejoin.values()) - time.monotonic())
                patience = soonest if patience is None else min(patience, soonest)
            done, _ = ray.wait([*starting, *feeder.decoding, *running], num_returns=1, timeout=patience)
            for ref in done:
                if ref in starting:
                    i = starting.pop(ref)
                    try:
                        node = ray.get(ref)  # raises: the model failed to load
                    except ActorUnavailableError:  # still restarting: asked again shortly
                        rejoin[i] = time.monotonic() + REJOIN_POLL_S
                        continue
                    feeder.placed(i, node, queue)
                    idle.append(i)
                elif ref in feeder.decoding:
                    feeder.came_back(ref)
                else:
                    i, slot, by_actor = running.pop(ref)
                    try:
                        out = ray.get(ref)  # a stage's exception (decode's or the model's) fails the run
                    except RayActorError:
                        # The actor's process died mid-slice. Its slice runs again on the first idle
                        # actor; Ray restarts this one, which rejoins once it says where it is now.
                        slot.lost += 1
                        if slot.lost > RESTARTS:
                            raise  # the slice kills every actor that takes it
                        feeder.shape.restarts += 1
                        if by_actor:
                            queue.appendleft(slot)
                        else:
                            feeder.decoded.appendleft(slot)
                        rejoin[i] = time.monotonic()
                        continue
                    feeder.shape.decoded_by_actors += by_actor
                    rows += [dict(zip(out, v, strict=True)) for v in zip(*out.values(), strict=True)]
                    idle.append(i)
    finally:
        for ref in feeder.decoding:
            ray.cancel(ref)
        for worker in hosts:
            ray.kill(worker)
    return rows, feeder.shape


@dataclass
class _Slot:
    """A slice on its way: its decode task (None: not sent), when it was sent."""

    raw: bytes
    ref: Any = None
    sent: float = 0.0
    lost: int = 0  # times an actor died running it


class _Feeder:
    """The decode tasks ahead of the actors: sized from where the actors are (expected at first,
    then as they report), bounded in number, timed so an idle actor knows when to stop waiting."""

    def __init__(
        self, pool: Any, nodes: list[dict], count: int, where: list[str], shared: Any, decode: Callable
    ):
        self.pool, self.nodes, self.count, self.shared, self.decode = pool, nodes, count, shared, decode
        self.shape = PoolShape(count, pool.cpus_per_actor, pool.num_gpus, 0.0, 0)
        self.decoding: dict[Any, _Slot] = {}  # decode task ref -> its slot, in the order sent
        self.decoded: deque[_Slot] = deque()
        self.last = time.monotonic()  # when a decode task last came back (or the run began)
        self.longest = 0.0  # the longest a decode task has taken
        self.where = list(where)  # each actor's node: expected, then as each reports
        self.reported: set[int] = set()
        self.task: Any = None
        self._size()

    def _size(self) -> None:
        import ray

        self.shape.decode_cpus = decode_share(self.pool, self.nodes, self.where)
        self.shape.ahead = ahead(
            self.count, self.shape.decode_cpus, self.nodes, self.where, self.pool.cpus_per_actor
        )
        self.task = None
        if self.shape.decode_cpus > 0:
            self.task = ray.remote(num_cpus=self.shape.decode_cpus, max_retries=4)(decode_one)

    def placed(self, actor: int, node: str, queue: deque) -> None:
        """Actor ``actor`` reported its node (at its start, or after a restart). Once every actor
        has, the decode tasks are sized from where they are now; decode tasks already sent that ask
        for more than the new size are cancelled (they may fit on no node any more) and their
        slices go back to the front of ``queue``."""
        restarted = actor in self.reported
        self.reported.add(actor)
        self.where[actor] = node
        if len(self.reported) < self.count:
            return  # sized from where they are expected until every actor has said where it is
        before = self.shape.decode_cpus
        self._size()
        self.shape.resized += restarted
        if self.decoding and self.shape.decode_cpus < before - 1e-9:
            self._send_again(queue)

    def _send_again(self, queue: deque) -> None:
        """The decode tasks out, cancelled; their slices back at the front of ``queue``, in order."""
        import ray

        for ref, slot in reversed(list(self.decoding.items())):
            ray.cancel(ref)
            slot.ref = None
            queue.appendleft(slot)
        self.decoding.clear()

    def send(self, queue: deque) -> None:
        """Decode tasks for the next slices, up to the bound."""
        while self.task is not None and queue and len(self.decoding) + len(self.decoded) < self.shape.ahead:
            slot = queue.popleft()
            slot.ref, slot.sent = self.task.remote(self.decode, self.shared, slot.raw), time.monotonic()
            self.decoding[slot.ref] = slot

    def came_back(self, ref: Any) -> None:
        slot = self.decoding.pop(ref)
        self.last = time.monotonic()
        self.longest = max(self.longest, self.last - slot.sent)
        self.decoded.append(slot)
        self.shape.decoded_by_tasks += 1

    def patience(self, after: float) -> float:
        """How long an idle actor waits for a decode task: ``after``, or three times the longest
        decode seen when decoding is that slow."""
        return max(after, 3 * self.longest)

    def stale(self, after: float) -> bool:
        """Decode tasks are out and none has come back for :meth:`patience` seconds."""
        return bool(self.decoding) and time.monotonic() - self.last >= self.patience(after)

    def take_back(self) -> _Slot:
        """The newest decode task not come back, cancelled: an idle actor decodes its slice."""
        import ray

        slot = self.decoding.pop(next(reversed(self.decoding)))
        ray.cancel(slot.ref)
        self.last = time.monotonic()  # the next one waits its own patience
        return slot
