"""The sentence-embedding model as a resource: local files only, loaded once per process."""

from typing import Literal

import dagster as dg
from pydantic import Field

from refinery.models.embedder import DEFAULT_MODEL, Embedder, EmbedderLoader
from refinery.models.onnx_embedder import OnnxEmbedder
from resources.compute import ComputeResource


class EmbedderResource(dg.ConfigurableResource):
    model: str = Field(
        DEFAULT_MODEL, description="'bundled:all-MiniLM-L6-v2' or a local sentence-transformers dir."
    )
    compute: ComputeResource  # shared with the other model resources: one device setting for all
    backend: Literal["auto", "onnx", "torch"] = Field(
        "auto",
        description="'auto': ONNX Runtime on CPU (graph exported once to $REFINERY_MODEL_CACHE), torch on "
        "a GPU; 'torch': sentence-transformers everywhere (today's path); 'onnx': ONNX Runtime, CPU only.",
    )
    quantize: Literal["none", "int8"] = Field(
        "int8",
        description="onnx backend: 'int8' dynamic quantization (default; cosine >= 0.99 with fp32 measured) "
        "or 'none' (fp32).",
    )
    threads: int = Field(
        0,
        ge=0,
        description="onnx backend, cores per process; 0 = every usable core. int8 (one text per run) "
        "encodes this many texts side by side, one thread each; fp32 uses them as ORT intra-op threads.",
    )

    def plain(self) -> EmbedderLoader:
        """The library's value of this resource (what a stage's maker gets)."""
        return EmbedderLoader(self.model, self.compute.plain(), self.backend, self.quantize, self.threads)

    def load(self) -> Embedder | OnnxEmbedder:
        return self.plain().load()
