"""The CLIP model the multimodal assets embed with: local weights only, loaded once per process."""

import dagster as dg
from pydantic import Field

from refinery.multimodal.clip_model import BUNDLED_TINY_CLIP, ClipLoader, ClipModel
from resources.compute import ComputeResource


class ClipResource(dg.ConfigurableResource):
    """An open_clip model from local files: never downloads, fails naming the missing file.

    The default is the project's tiny CLIP (``bundled:tiny-clip``, built by
    ``python -m refinery.multimodal.tiny_clip_train``). For real weights set ``checkpoint`` to the
    file and ``model_name`` to its architecture (OpenAI's ViT-B-32: ``ViT-B-32-quickgelu``), or
    set ``model_name`` and ``pretrained`` to an open_clip tag already in the local cache.
    """

    model_name: str = Field(
        "",
        description="open_clip architecture ('ViT-B-32', 'ViT-B-32-quickgelu' for OpenAI weights) or a model "
        "config JSON; '' reads open_clip_config.json beside the checkpoint.",
    )
    pretrained: str = Field(
        "", description="An open_clip tag (e.g. 'openai'), used only if its file is already cached locally."
    )
    checkpoint: str = Field(
        BUNDLED_TINY_CLIP,
        description="A local weights file (.pt/.bin/.safetensors) or an open_clip local-dir folder; "
        f"'{BUNDLED_TINY_CLIP}' is the project's own small CLIP.",
    )
    cache_dir: str = Field("", description="open_clip's download cache, searched for `pretrained` tags.")
    compute: ComputeResource  # shared with the other model resources: one device setting for all

    def plain(self) -> ClipLoader:
        """The library's value of this resource (what a stage's maker gets)."""
        return ClipLoader(
            self.model_name, self.pretrained, self.checkpoint, self.cache_dir, self.compute.plain()
        )

    def load(self) -> ClipModel:
        return self.plain().load()

    def dataloader_workers(self) -> int:
        return self.compute.dataloader_workers
