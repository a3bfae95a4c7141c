"""The quality classifier that quality_scored applies: quality_classifier's by default, or a file."""

import dagster as dg
from pydantic import Field

from refinery.paths import Layout
from refinery.quality.classifier import QualityClassifier, QualityModelLoader


class QualityClassifierResource(dg.ConfigurableResource):
    """Empty ``model_path``: the classifier the ``quality_classifier`` asset trained last (models/
    quality_classifier/current.json under the home). Otherwise a ``.safetensors`` file that asset
    wrote (its ``.json`` sidecar carries the reference score percentiles threshold mode uses)."""

    model_path: str = Field(
        "", description="'' for quality_classifier's model, or a .safetensors file it made."
    )

    def plain(self) -> QualityModelLoader:
        """The library's value of this resource (what a stage's maker gets)."""
        return QualityModelLoader(self.model_path)

    def load(self, layout: Layout) -> tuple[QualityClassifier, dict]:
        """The classifier (loaded once per process per file) and its recorded description."""
        return self.plain().load(layout)
