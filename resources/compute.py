"""Where model inference runs: device (auto/cpu/cuda), batch size, precision."""

import dagster as dg
from pydantic import Field

from refinery.models.device import Compute


class ComputeResource(dg.ConfigurableResource):
    device: str = Field("auto", description="'auto' (GPU if torch sees one), 'cpu' or 'cuda'.")
    batch_size: int = Field(64, description="Items per forward pass.")
    fp16: bool = Field(True, description="Half precision on GPU (ignored on CPU).")
    dataloader_workers: int = Field(
        2,
        ge=0,
        description="DataLoader worker processes that decode images and video beside the model (engine "
        "'local'; 0: in the step's own process). On engine 'ray' decode tasks take ray_decode_cpus instead.",
    )
    num_gpus: float = Field(
        0.0, description="GPUs each Ray actor of a GPU stage asks for (engine 'ray'; 0 on CPU clusters)."
    )

    ray_actors: int = Field(
        1,
        ge=1,
        description="Actors of a model stage's Ray actor pool (engine 'ray'): embeddings, quality_scored and "
        "clip_scored run their model on this many actors, each loading it once (docs/scale-models.md).",
    )
    ray_cpus_per_actor: float = Field(
        1.0, gt=0, description="CPUs each model actor asks for (engine 'ray'; fractional allowed)."
    )
    ray_decode_cpus: float = Field(
        1.0, gt=0, description="CPUs each decode task ahead of the model actors asks for (engine 'ray')."
    )

    def model_pool(self):
        """The actor pool of a model stage on Ray (see :meth:`Compute.model_pool`)."""
        return self.plain().model_pool()

    def plain(self) -> Compute:
        """The library's value of this resource (what a stage's maker gets)."""
        return Compute(
            self.device,
            self.batch_size,
            self.fp16,
            self.dataloader_workers,
            self.num_gpus,
            self.ray_actors,
            self.ray_cpus_per_actor,
            self.ray_decode_cpus,
        )

    def torch_device(self) -> str:
        return self.plain().torch_device()
