"""Keeping Python's cyclic garbage collector off the objects a Dagster process holds until it ends.

A process that loads ``definitions`` (the ``dagster`` CLI, ``refinery run``, a code server) holds
some million objects for its whole life: the modules of dagster, pandas, pyarrow and ours, and the
asset graph. Python's collector scans all of them again in every full collection while a run
executes, and again several times while the interpreter shuts down: on the rule-based chain through
``dagster asset materialize`` that was ~0.8 CPU s of collections during the run and ~1.1–1.5 CPU s
after the run had finished (benchmarks/RESULTS.md, "The chain's fixed costs, session 9").

:func:`freeze_loaded` moves what is alive once the definitions are built into the collector's
permanent generation (``gc.freeze``), which later collections do not scan; :func:`loading_frozen`
also keeps the collector off while they are built (two full collections of the growing heap, ~0.27
CPU s, ran inside ``import definitions``); :func:`freeze_at_exit` does the same for everything still
alive when the interpreter starts to shut down. Reference
counting still frees every object as before; what changes is only that reference cycles among
frozen objects are not looked for (those loaded at start-up live until the process ends anyway,
and at exit the operating system takes the memory back). Nothing a step computes depends on it.
"""

from __future__ import annotations

import atexit
import gc
from collections.abc import Iterator
from contextlib import contextmanager

_registered = False


@contextmanager
def loading_frozen() -> Iterator[None]:
    """Build long-lived objects (imports, the definitions) with the collector off, then freeze all
    that is alive (:func:`freeze_loaded`). Loading makes almost no cyclic garbage (the collections
    it triggered found 0-30 objects), so nothing is kept that a collection would have freed."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        freeze_loaded()
        if enabled:
            gc.enable()


def freeze_loaded() -> None:
    """Stop scanning the objects alive now (the imported modules and the built definitions)."""
    gc.freeze()


def freeze_at_exit() -> None:
    """Freeze everything still alive when the interpreter begins to shut down (once per process):
    the collections Python runs while it tears modules down then scan only what was never frozen.
    Registered with :mod:`atexit`, so it runs after the handlers registered later (they run first)."""
    global _registered
    if not _registered:
        atexit.register(gc.freeze)
        _registered = True
