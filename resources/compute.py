"""Where model inference runs: device (auto/cpu/cuda), batch size, precision."""

import dagster as dg
from pydantic import Field

from refinery.models.device import Compute


class ComputeResource(dg.ConfigurableResource):
    device: str = Field("auto", description="'auto' (GPU if torch sees one), 'cpu' or 'cuda'.")
    batch_size: int = Field(64, description="Items per forward pass.")
    fp16: bool = Field(True, description="Half precision on GPU (ignored on CPU).")
    dataloader_workers: int = Field(2, description="Worker processes for decoding inputs (images, video).")
    num_gpus: float = Field(
        0.0, description="GPUs each Ray actor of a GPU stage asks for (engine 'ray'; 0 on CPU clusters)."
    )

    ray_actors: int = Field(
        1,
        ge=1,
        description="Actors of a model stage's Ray actor pool (refinery.engine.model_pool; each loads the "
        "model once). The assets' own Ray path does not read it yet: see docs/scale-models.md.",
    )

    def model_pool(self):
        """The actor pool of a model stage on Ray: ``ray_actors`` actors of ``num_gpus`` GPUs each
        (fractional allowed), ``batch_size`` rows per call."""
        from refinery.engine.model_pool import ModelPool

        return ModelPool(actors=self.ray_actors, num_gpus=self.num_gpus, batch_size=self.batch_size)

    def plain(self) -> Compute:
        """The library's value of this resource (what a stage's maker gets)."""
        return Compute(self.device, self.batch_size, self.fp16, self.dataloader_workers, self.num_gpus)

    def torch_device(self) -> str:
        return self.plain().torch_device()
