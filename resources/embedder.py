"""The sentence-embedding model as a resource: local files only, loaded once per process."""

import dagster as dg
from pydantic import Field

from refinery.models.embedder import DEFAULT_MODEL, Embedder, EmbedderLoader
from resources.compute import ComputeResource


class EmbedderResource(dg.ConfigurableResource):
    model: str = Field(
        DEFAULT_MODEL, description="'bundled:all-MiniLM-L6-v2' or a local sentence-transformers dir."
    )
    compute: ComputeResource  # shared with the other model resources: one device setting for all

    def plain(self) -> EmbedderLoader:
        """The library's value of this resource (what a stage's maker gets)."""
        return EmbedderLoader(self.model, self.compute.plain())

    def load(self) -> Embedder:
        return self.plain().load()
