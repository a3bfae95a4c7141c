"""Connected components over edge files, in rounds of tasks: large-star / small-star.

Kiveris et al., "Connected Components in MapReduce and Beyond" (SoCC 2014). Edges are rows
``(u, v)`` keyed by ``u``, hash-partitioned over ``parts`` files by :func:`node_partition`; each
round is one shuffle step of ``parts`` tasks, each grouping its rows by ``u`` in one vectorized
pass (sort, then per-group minimum):

- **large-star** (rows in both directions): ``m(u) = min(u, N(u))``; every neighbour ``v > u``
  is linked to ``m(u)`` instead;
- **small-star** (rows from the larger end to the smaller): ``m(u) = min(N(u))``; ``u`` and every
  neighbour ``v ≠ m(u)`` are linked to ``m(u)``.

Both keep the components and only ever link towards smaller numbers; alternated, they converge in
O(log n) rounds to stars, each component's edges all joined to its smallest node, which is the
document the keep rule keeps (numbers are first-come order). The graph is a set of such stars
exactly when every node either has no smaller neighbour or has one neighbour only; each large-star
task checks that of the nodes it holds (all their edges are there), and the rounds stop when all
agree. Each task first contracts its own rows with a local union-find
(:func:`refinery.dedup.components.connected_components`) where that helps, and the first input is
already contracted per verification task, so most duplicate groups are stars before round one.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from refinery.dedup.components import connected_components
from refinery.dedup.marked_shuffle import TaskOutput, WorkDir, gather, node_partition
from refinery.engine.tasks import TaskRunner

MAX_ROUNDS = 64  # O(log n) in theory; reached only by a bug, never by a graph
EDGE_SCHEMA = pa.schema([pa.field("u", pa.int64()), pa.field("v", pa.int64())])


def local_stars(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges ``a–b`` contracted: (node, root) for every node but its component's root (the
    smallest node), with the components of the given edges."""
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if not len(a):
        return a, b
    nodes, inverse = np.unique(np.concatenate([a, b]), return_inverse=True)
    roots = connected_components(len(nodes), inverse[: len(a)], inverse[len(a) :])
    leaf = roots != np.arange(len(nodes))
    return nodes[leaf], nodes[roots[leaf]]


def write_for_large_star(out: TaskOutput, x: np.ndarray, y: np.ndarray, parts: int) -> None:
    """Undirected edges as rows in both directions, each keyed (and partitioned) by its ``u``."""
    u = np.concatenate([x, y])
    v = np.concatenate([y, x])
    table = pa.table({"u": u, "v": v}, schema=EDGE_SCHEMA)
    out.scatter(table, node_partition(u, parts), parts)


def write_for_small_star(out: TaskOutput, x: np.ndarray, y: np.ndarray, parts: int) -> None:
    """Undirected edges as one row each, from the larger end to the smaller, keyed by the larger."""
    u, v = np.maximum(x, y), np.minimum(x, y)
    out.scatter(pa.table({"u": u, "v": v}, schema=EDGE_SCHEMA), node_partition(u, parts), parts)


def _rows(source: str, k: int) -> tuple[np.ndarray, np.ndarray]:
    table = gather(source, k)
    if table is None or not table.num_rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pairs = np.unique(
        np.stack([table.column("u").to_numpy(), table.column("v").to_numpy()], axis=1), axis=0
    )  # sorted by u, then v; rows repeated by different senders once
    return pairs[:, 0], pairs[:, 1]


def _group_min(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For rows sorted by u: each row's group start, the group's min v, and its size."""
    starts = np.flatnonzero(np.concatenate([[True], u[1:] != u[:-1]]))
    sizes = np.diff(np.append(starts, len(u)))
    group = np.repeat(np.arange(len(starts)), sizes)
    return group, np.minimum.reduceat(v, starts), sizes


def large_star_task(step: str, index: int, source: str, parts: int) -> dict:
    """One large-star reducer: rows ``(u, v)`` of partition ``index`` in both directions."""
    out = TaskOutput(step, index)
    u, v = _rows(source, index)
    if not len(u):
        return out.commit({"stars": True, "edges": 0})
    group, min_v, sizes = _group_min(u, v)
    first_u = u[np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    stars = bool(np.all((min_v >= first_u) | (sizes == 1)))
    m = np.minimum(first_u, min_v)[group]
    larger = v > u
    x, y = v[larger], m[larger]
    if len(x):
        both = np.unique(np.stack([x, y], axis=1), axis=0)
        x, y = both[:, 0], both[:, 1]
    write_for_small_star(out, x, y, parts)
    return out.commit({"stars": stars, "edges": len(x)})


def small_star_task(step: str, index: int, source: str, parts: int) -> dict:
    """One small-star reducer: rows ``(u, v)``, ``v < u``, of partition ``index``; its output is
    contracted locally before it is written for the next large-star round."""
    out = TaskOutput(step, index)
    u, v = _rows(source, index)
    if not len(u):
        return out.commit({"edges": 0})
    group, min_v, sizes = _group_min(u, v)
    first_u = u[np.concatenate([[0], np.cumsum(sizes)[:-1]])]
    m = min_v[group]
    others = v != m
    x = np.concatenate([v[others], first_u])
    y = np.concatenate([m[others], min_v])
    x, y = local_stars(x, y)  # same components, fewer and shallower edges
    write_for_large_star(out, x, y, parts)
    return out.commit({"edges": len(x)})


def star_rounds(
    work: WorkDir, runner: TaskRunner, first: str, parts: int, prefix: str = "cc"
) -> tuple[str, int]:
    """Alternate the rounds from the step ``first`` (rows for large-star) until the graph is stars;
    returns the step whose files hold the final ``(leaf, root)`` rows, keyed by leaf, and the rounds."""
    source = work.step(first)
    for round_ in range(MAX_ROUNDS):
        large = f"{prefix}-{round_:03d}-large"
        results = work.run(runner, large, large_star_task, [(source, parts)] * parts)
        if all(r["stars"] for r in results):
            return large, round_ + 1
        small = f"{prefix}-{round_:03d}-small"
        work.run(runner, small, small_star_task, [(work.step(large), parts)] * parts)
        source = work.step(small)
    raise RuntimeError(f"connected components did not converge in {MAX_ROUNDS} rounds")
