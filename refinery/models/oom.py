"""Out of GPU memory: halve the batch and try again, instead of failing the stage.

A batch size that fits one model, one GPU and one document length does not fit another; a stage
that dies on the first oversized batch wastes the whole partition's work so far. Here a batch
that raises CUDA's out-of-memory error is split in two and each half encoded on its own (the cache
emptied first), recursively, down to a single item; only a single item that does not fit fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

log = logging.getLogger(__name__)
T = TypeVar("T")


def out_of_memory_error() -> type[BaseException]:
    """torch's CUDA out-of-memory exception type (present in CPU builds too)."""
    import torch

    return torch.cuda.OutOfMemoryError


def encode_halving(encode: Callable[[Any], np.ndarray], batch: Sequence[T] | Any) -> np.ndarray:
    """``encode(batch)``, or, when it runs out of GPU memory, the halves encoded separately and
    stacked in order. ``batch`` is anything with ``len`` and slicing (a list, a tensor)."""
    oom = out_of_memory_error()
    try:
        return encode(batch)
    except oom:
        if len(batch) <= 1:
            raise
        _free_cache()
        half = len(batch) // 2
        log.warning(f"out of GPU memory on a batch of {len(batch)}: retrying as {half} + {len(batch) - half}")
        return np.concatenate([encode_halving(encode, batch[:half]), encode_halving(encode, batch[half:])])


def _free_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()
