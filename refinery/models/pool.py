"""The shape of a model stage's actor pool on Ray (what the ``compute`` resource sets; the pool
itself runs in :mod:`refinery.engine.model_pool`; how the requests are fitted to the cluster's
nodes: :mod:`refinery.engine.model_actors`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ModelPool:
    """The shape of a model stage's actor pool on Ray."""

    actors: int = 1
    num_gpus: float = 0.0
    batch_size: int = 64
    cpus_per_actor: float = 1.0
    decode_cpus: float = 1.0

    def __post_init__(self) -> None:
        if self.actors < 1:
            raise ValueError(f"a model pool needs at least one actor, got {self.actors}")
        if self.num_gpus < 0 or self.batch_size < 1:
            raise ValueError(
                f"num_gpus must be ≥ 0 and batch_size ≥ 1, got {self.num_gpus}, {self.batch_size}"
            )
