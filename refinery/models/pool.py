"""The shape of a model stage's actor pool on Ray (what the ``compute`` resource sets; the pool
itself runs in :mod:`refinery.engine.model_pool`)."""

from __future__ import annotations

from dataclasses import dataclass, replace


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

    def fitted(self, cluster_cpus: float) -> ModelPool:
        """This pool, its CPU requests scaled down to fit a cluster of ``cluster_cpus`` CPUs.

        The actors hold their CPUs for the whole stage while the decode tasks stream beside them, so
        a pool asking for more than the cluster has would wait forever (the defaults, one actor and
        one decode CPU, need two: a one-CPU cluster would hang). Ray's CPUs are a scheduling count,
        so smaller fractions only share the cores; the GPUs asked for are left as they are."""
        needed = self.actors * self.cpus_per_actor + self.decode_cpus
        if needed <= cluster_cpus or needed <= 0:
            return self
        factor = max(cluster_cpus, 0.01) / needed
        return replace(
            self, cpus_per_actor=self.cpus_per_actor * factor, decode_cpus=self.decode_cpus * factor
        )
