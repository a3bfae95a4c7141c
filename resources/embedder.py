"""The sentence-embedding model as a resource: local files only, loaded once per process."""

import dagster as dg
from pydantic import Field

from refinery.models.embedder import DEFAULT_MODEL, Embedder, load_embedder
from resources.compute import ComputeResource


class EmbedderResource(dg.ConfigurableResource):
    model: str = Field(
        DEFAULT_MODEL, description="'bundled:all-MiniLM-L6-v2' or a local sentence-transformers dir."
    )
    compute: ComputeResource  # shared with the other model resources: one device setting for all

    def load(self) -> Embedder:
        return load_embedder(self.model, self.compute.device, self.compute.batch_size, self.compute.fp16)
