"""The contract of a stage's processor: a batch in, kept and rejected rows out, plus four hooks.

A stage's maker returns a processor (or a context manager yielding one). Its ``__call__`` decides
each batch; the hooks are optional in the sense that :class:`StageProcessor` gives each a default
that does nothing, so a processor class derives from it and overrides what it needs, and a plain
batch function (``bound(f, params)``, ``keep_all``, a lambda) becomes a processor through
:func:`as_processor`. The kernel and the engines call the hooks directly, never by looking them up:

- ``route(frame)``: which rows this stage takes (a bool mask; ``None`` for all). The others are
  left to a sibling stage (the language routing) and counted as routed, not kept or rejected.
- ``report()``: metadata for the UI (:mod:`refinery.metadata` values), called after the partition.
- ``summary()``: JSON-ready counts saved in the partition's stats file, called after the partition.
- ``absorb(delta)``: add the growth of a worker copy's ``summary()`` (an engine that splits the
  partition over workers calls it on the driver's processor, so its report counts every row).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from refinery.batch import BatchResult


class Reporting(Protocol):
    """What the kernel asks of anything that produced a partition (a processor, an inbox reader)."""

    def report(self) -> Mapping[str, Any]: ...

    def summary(self) -> Mapping[str, Any]: ...


class Processor(Reporting, Protocol):
    """A stage's batch processor with its hooks (see the module's docstring)."""

    def __call__(self, frame: pd.DataFrame) -> BatchResult: ...

    def route(self, frame: pd.DataFrame) -> np.ndarray | None: ...

    def absorb(self, delta: Mapping[str, Any]) -> None: ...


class StageProcessor:
    """The hooks' defaults: takes every row, reports and counts nothing beyond the standard figures."""

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        raise NotImplementedError

    def route(self, frame: pd.DataFrame) -> np.ndarray | None:
        return None

    def report(self) -> Mapping[str, Any]:
        return {}

    def summary(self) -> Mapping[str, Any]:
        return {}

    def absorb(self, delta: Mapping[str, Any]) -> None:
        return None


class FunctionProcessor(StageProcessor):
    """A plain batch function as a processor with the default hooks."""

    def __init__(self, function: Callable[[pd.DataFrame], BatchResult]):
        self.function = function

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        return self.function(frame)


HOOKS = ("route", "report", "summary", "absorb")


def as_processor(made: Processor | Callable[[pd.DataFrame], BatchResult]) -> Processor:
    """A maker's processor as it is, or a plain batch function wrapped with the default hooks.

    An object that defines a hook without deriving from :class:`StageProcessor` is refused rather
    than wrapped, so a ``report()`` is never silently dropped."""
    if isinstance(made, StageProcessor):
        return made
    defined = [hook for hook in HOOKS if callable(getattr(made, hook, None))]
    if defined:
        raise TypeError(
            f"{type(made).__name__} defines {', '.join(defined)}: derive it from "
            "refinery.kernel.processor.StageProcessor so the kernel calls its hooks"
        )
    return FunctionProcessor(made)


def routed_input(process: Processor, frame: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The rows of ``frame`` that ``process`` takes, and how many it leaves to another stage.

    A processor whose ``route(frame)`` gives a mask takes only the rows it selects (the language
    routing: heuristic_filtered takes the main languages, multilingual_filtered the rest); the
    others are neither kept nor rejected here but counted as routed, so each stage's accounting
    (rows in = kept + rejected + routed) still closes.
    """
    routed = process.route(frame)
    if routed is None:
        return frame, 0
    mask = np.asarray(routed, dtype=bool)
    if len(mask) != len(frame):
        raise ValueError(f"route() gave {len(mask)} flags for {len(frame)} rows")
    if mask.all():
        return frame, 0
    return frame.loc[mask].reset_index(drop=True), int((~mask).sum())
