"""Model stages on Ray: CPU decoding as tasks, then a pool of model actors, each loading once.

A model stage (embeddings, the quality classifier, CLIP scoring, keyframes) is two Ray Data
steps over the partition's slices (:mod:`refinery.engine.slices`):

1. **decode** (tasks, CPU only): each slice's rows are read from Parquet and turned into model
   inputs by ``decode`` (image bytes to arrays, frames out of a video; for text the identity), with
   every row's (slice, row) position carried along;
2. **infer** (an actor pool): :class:`ModelActor`, a callable class, loads the model in
   ``__init__`` (once per actor, never on the driver) and runs ``infer`` on batches of
   ``batch_size`` decoded rows. The pool has ``actors`` actors, each asking for ``num_gpus`` GPUs
   (fractional: 0.25 puts four actors on one GPU) and ``cpus_per_actor`` CPUs.

Ray Data streams the two steps, so decoding runs ahead of the model actors and a GPU does not wait
for a CPU to decode its next batch. The driver only plans slices and gathers the per-row outputs,
which it puts back in row order (``run_model_stage`` returns them stacked, row i of the partition
first to last): the same array the in-process stage computes.

The pool's shape comes from the ``compute`` resource (:class:`ModelPool`, built by
``ComputeResource.model_pool()``): ``num_gpus``, ``ray_actors`` and ``batch_size``.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from refinery.engine.slices import Slice, plan_slices

ORDER = "__order"


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


@dataclass(frozen=True)
class ModelStage:
    """What runs where: ``decode(frame) -> frame`` on CPU tasks, ``load() -> model`` once per actor,
    ``infer(model, frame) -> array`` (one row per input row) on the actors. All three must be
    picklable by value (module-level functions, or ``functools.partial`` of them)."""

    columns: list[str]
    load: Callable[[], Any]
    infer: Callable[[Any, Any], np.ndarray]
    decode: Callable[[Any], Any] | None = None


def read_slice(piece: Slice, columns: list[str]):
    """A slice's rows as pandas, with each row's (slice, row) position in :data:`ORDER`."""
    import pandas as pd
    import pyarrow.parquet as pq

    if piece.row_groups:
        frame = (
            pq.ParquetFile(piece.file).read_row_groups(list(piece.row_groups), columns=columns).to_pandas()
        )
    else:
        frame = pd.DataFrame({c: [] for c in columns})
    frame[ORDER] = [piece.index * (1 << 32) + i for i in range(len(frame))]
    return frame


class ModelActor:
    """The model step: the model is loaded in ``__init__``, once per actor."""

    def __init__(self, payload: bytes):
        from ray import cloudpickle

        self.stage: ModelStage = cloudpickle.loads(payload)
        self.model = self.stage.load()

    def __call__(self, frame) -> dict[str, list]:
        import pandas as pd

        out = np.asarray(self.stage.infer(self.model, frame.drop(columns=[ORDER])))
        if len(out) != len(frame):
            raise ValueError(f"the model stage returned {len(out)} rows for {len(frame)}")
        return pd.DataFrame({ORDER: [pickle.dumps(frame[ORDER].to_numpy())], "array": [pickle.dumps(out)]})


def run_model_stage(engine: Any, location: Path, stage: ModelStage, pool: ModelPool) -> np.ndarray:
    """Every row's model output for the partition at ``location``, in row order, computed on the
    engine's Ray cluster by ``pool`` (decode tasks, then the model actors)."""
    import ray.data
    from ray import cloudpickle

    engine.connect()
    slices = plan_slices(location, engine.slice_rows)
    payload = cloudpickle.dumps(stage)
    dataset = ray.data.from_items(
        [{"slice": pickle.dumps(s)} for s in slices], override_num_blocks=len(slices)
    )
    decoded = dataset.map_batches(  # a function: Ray runs it as tasks, on CPUs only
        decode_slices,
        fn_kwargs={"payload": payload},
        batch_size=1,
        num_cpus=pool.decode_cpus,
    )
    rows = decoded.map_batches(
        ModelActor,
        fn_constructor_kwargs={"payload": payload},
        batch_size=pool.batch_size,
        batch_format="pandas",
        compute=ray.data.ActorPoolStrategy(size=pool.actors),
        num_cpus=pool.cpus_per_actor,
        num_gpus=pool.num_gpus or None,
    ).take_all()
    order = np.concatenate([pickle.loads(r[ORDER]) for r in rows]) if rows else np.zeros(0, np.int64)
    arrays = [pickle.loads(r["array"]) for r in rows]
    if not arrays:
        return np.zeros((0,))
    stacked = np.concatenate(arrays)
    return stacked[np.argsort(order, kind="stable")]


def decode_slices(batch: dict, payload: bytes) -> Any:
    """The CPU step: read each slice of the batch and decode its rows."""
    import pandas as pd
    from ray import cloudpickle

    stage: ModelStage = cloudpickle.loads(payload)
    frames = []
    for raw in batch["slice"]:
        frame = read_slice(pickle.loads(raw), stage.columns)
        frames.append(stage.decode(frame) if stage.decode is not None else frame)
    return pd.concat(frames, ignore_index=True)
