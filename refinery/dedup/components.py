"""Connected components of a duplicate graph, and which document of each component is kept.

Documents are numbered 0..n-1 in "first come" order (sources in sorted order, rows in reading
order within a source). :func:`connected_components` is a union-find over whole edge arrays at once:
each round hooks, for every edge whose ends have different roots, the larger root under the smaller
(``np.minimum.at``), then compresses every path to its root by pointer jumping (``parent[parent]``
until nothing changes). Pointers only ever go to smaller numbers, so a component's root is its
smallest member: the first document of the component, the one :func:`keep_first` keeps.
"""

from __future__ import annotations

import numpy as np


def _compress(parent: np.ndarray) -> np.ndarray:
    """Every node pointing straight at its root (pointer jumping, O(log depth) passes)."""
    while True:
        grand = parent[parent]
        if np.array_equal(grand, parent):
            return parent
        parent = grand


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The root (smallest member) of each node's component, for the undirected edges ``a[i]–b[i]``."""
    parent = np.arange(n, dtype=np.int64)
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    if len(a) != len(b):
        raise ValueError(f"{len(a)} edge starts for {len(b)} edge ends")
    if len(a) and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= n):
        raise ValueError(f"edge endpoints must lie in [0, {n})")
    while len(a):
        ra, rb = parent[a], parent[b]
        open_ = ra != rb
        if not open_.any():
            break
        a, b, ra, rb = a[open_], b[open_], ra[open_], rb[open_]
        np.minimum.at(parent, np.maximum(ra, rb), np.minimum(ra, rb))
        parent = _compress(parent)
    return parent


def keep_first(roots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(kept, component size) per node: the root, i.e. the first document of each component, is kept."""
    roots = np.asarray(roots, dtype=np.int64)
    kept = roots == np.arange(len(roots))
    sizes = np.bincount(roots, minlength=len(roots))[roots]
    return kept, sizes
