"""Choosing where models run: ``cpu``, ``cuda`` or ``auto``, and whether to use fp16."""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from dataclasses import dataclass

from refinery.models.pool import ModelPool

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(requested: str) -> str:
    """The torch device to use; ``cuda`` without a GPU is an error, ``auto`` falls back to CPU."""
    if requested not in DEVICES:
        raise ValueError(f"unknown device {requested!r}; choose one of {DEVICES}")
    import torch

    has_cuda = torch.cuda.is_available()
    if requested == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' was requested but torch sees no CUDA GPU; use 'auto' or 'cpu'")
    if requested == "auto":
        return "cuda" if has_cuda else "cpu"
    return requested


def use_fp16(device: str, fp16: bool) -> bool:
    """Half precision only on a GPU: on CPU it is slower and less accurate."""
    return fp16 and device.startswith("cuda")


# What the forkserver imports when it starts (see worker_context): torch, and every module a stage
# asked for so far in this process. The server starts once per process, with the list of that moment.
_FORKSERVER_PRELOAD: list[str] = ["torch"]


def worker_context(device: str, preload: Sequence[str] = ()) -> multiprocessing.context.BaseContext:
    """How a stage starts its DataLoader workers. With CUDA they spawn (a forked child cannot use
    CUDA). On CPU they come from a forkserver, not a fork of the step's process: that process holds
    threads (Dagster's, torch's, a Ray driver's gRPC) and a child forked from a threaded process can
    crash or hang at random (Python 3.14 makes forkserver Linux's default for that reason). The
    server imports torch and ``preload`` (the modules the workers need to unpickle the dataset:
    open_clip alone takes 2.5 s) once, when it starts, so a worker starts in milliseconds instead
    of importing them again."""
    if device.startswith("cuda"):
        return multiprocessing.get_context("spawn")
    _FORKSERVER_PRELOAD.extend(m for m in preload if m not in _FORKSERVER_PRELOAD)
    multiprocessing.set_forkserver_preload(list(_FORKSERVER_PRELOAD))  # no effect once the server runs
    return multiprocessing.get_context("forkserver")


@dataclass(frozen=True)
class Compute:
    """Where model inference runs, as a plain value a stage's maker gets (it pickles, so it travels
    to an engine's workers): device, batch size, precision, decoding workers, GPUs per actor."""

    device: str = "auto"
    batch_size: int = 64
    fp16: bool = True
    dataloader_workers: int = 2
    num_gpus: float = 0.0
    ray_actors: int = 1  # a model stage's actor pool on Ray (refinery.engine.model_pool)
    ray_cpus_per_actor: float = 1.0
    ray_decode_cpus: float = 1.0

    def model_pool(self) -> ModelPool:
        """The actor pool of a model stage on Ray: ``ray_actors`` actors of ``num_gpus`` GPUs
        (fractional: 0.25 puts four on one GPU) and ``ray_cpus_per_actor`` CPUs each, ``batch_size``
        rows a call, decode tasks of ``ray_decode_cpus`` CPUs ahead of them."""
        return ModelPool(
            actors=self.ray_actors,
            num_gpus=self.num_gpus,
            batch_size=self.batch_size,
            cpus_per_actor=self.ray_cpus_per_actor,
            decode_cpus=self.ray_decode_cpus,
        )

    def torch_device(self) -> str:
        return resolve_device(self.device)
