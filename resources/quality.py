"""The quality classifier that quality_scored applies: quality_classifier's by default, or a file."""

from pathlib import Path

import dagster as dg
from pydantic import Field

from refinery.names import QUALITY_CLASSIFIER
from refinery.paths import Layout
from refinery.quality.artifacts import current, models_dir, sidecar
from refinery.quality.classifier import QualityClassifier, load_classifier


class QualityClassifierResource(dg.ConfigurableResource):
    """Empty ``model_path``: the classifier the ``quality_classifier`` asset trained last (models/
    quality_classifier/current.json under the home). Otherwise a ``.safetensors`` file that asset
    wrote (its ``.json`` sidecar carries the reference score percentiles threshold mode uses)."""

    model_path: str = Field(
        "", description="'' for quality_classifier's model, or a .safetensors file it made."
    )

    def load(self, layout: Layout) -> tuple[QualityClassifier, dict]:
        """The classifier (loaded once per process per file) and its recorded description."""
        if self.model_path:
            path = Path(self.model_path).expanduser()
            return load_classifier(path), sidecar(path.resolve()) or {}
        artifact = current(models_dir(layout.home, QUALITY_CLASSIFIER))
        if artifact is None:
            raise FileNotFoundError(
                f"no quality classifier under {models_dir(layout.home, QUALITY_CLASSIFIER)}: materialize the "
                "quality_classifier asset first, or set the quality_classifier resource's model_path"
            )
        return load_classifier(artifact.path), artifact.info
