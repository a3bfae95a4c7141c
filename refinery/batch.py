"""Splitting a batch into kept and rejected rows: the one result type every stage returns.

Every stage returns a reason per row (``None`` to keep it), so the same code guarantees
``rows in = rows out + rows rejected`` everywhere and fills the reason columns one way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

Reason = tuple[str, str] | None  # (code, detail)


@dataclass
class BatchResult:
    kept: pd.DataFrame
    rejected: pd.DataFrame


# What every stage hands its runner: one upstream batch in, kept and rejected rows out.
BatchProcessor = Callable[[pd.DataFrame], BatchResult]


def split_batch(
    frame: pd.DataFrame, reasons: list[Reason], extra: dict[str, list] | None = None
) -> BatchResult:
    """Rows with a reason go to ``rejected`` with ``reason``/``reason_detail`` (and ``extra``)."""
    if len(reasons) != len(frame):
        raise ValueError(f"{len(reasons)} reasons for {len(frame)} rows")
    drop = np.fromiter((r is not None for r in reasons), dtype=bool, count=len(reasons))
    kept = frame.loc[~drop].reset_index(drop=True)
    rejected = frame.loc[drop].reset_index(drop=True)
    picked = [r for r in reasons if r is not None]
    rejected["reason"] = [r[0] for r in picked]
    rejected["reason_detail"] = [r[1] for r in picked]
    for name, values in (extra or {}).items():
        rejected[name] = [v for v, d in zip(values, drop, strict=True) if d]
    return BatchResult(kept, rejected)


def keep_all(frame: pd.DataFrame) -> BatchResult:
    """The processor of a stage that publishes its upstream as it is (the final corpus)."""
    return split_batch(frame, [None] * len(frame))


def bound(function: Callable[..., BatchResult], *args: object, **kwargs: object) -> BatchProcessor:
    """A batch function with its other arguments fixed: ``bound(f, params)(frame) == f(frame, params)``."""

    def process(frame: pd.DataFrame) -> BatchResult:
        return function(frame, *args, **kwargs)

    process.__name__ = getattr(function, "__name__", "process")
    return process
