"""How many models this process has loaded, by kind: the Ray model pools report it per actor, and
the tests count it on the driver (which must load none). A loader records a load only when it
really builds a model (not when its per-process cache answers)."""

from __future__ import annotations

import threading
from collections import Counter

_COUNTS: Counter[str] = Counter()
_LOCK = threading.Lock()


def record(kind: str) -> None:
    """One model of ``kind`` (embedder, classifier, clip) was built in this process."""
    with _LOCK:
        _COUNTS[kind] += 1


def counts() -> dict[str, int]:
    """Loads so far in this process, by kind."""
    with _LOCK:
        return dict(_COUNTS)


def total() -> int:
    with _LOCK:
        return sum(_COUNTS.values())
