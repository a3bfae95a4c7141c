"""The KenLM model that perplexity_scored queries: reference_lm's by default, or a file you name."""

import dagster as dg
from pydantic import Field

from refinery.paths import Layout
from refinery.quality.reference import KenLMLoader, ScoringLM


class KenLMResource(dg.ConfigurableResource):
    """Which n-gram model scores perplexity, and the order both training and scoring use.

    Empty ``model_path``: the model the ``reference_lm`` asset trained (models/reference_lm/
    current.json under the home). Otherwise an ``.arpa`` or ``.binary`` KenLM file; its bucket
    cutoffs come from ``bucket_cutoffs`` or from materializing ``reference_lm`` with this resource
    (which then records the file's percentiles on the reference corpus instead of training).
    A missing file, a file that is not a KenLM model, or a model of another order is an error.
    """

    model_path: str = Field("", description="'' for reference_lm's model, or a .arpa/.binary KenLM file.")
    order: int = Field(
        5,
        ge=2,
        le=6,
        description="n-gram order: reference_lm trains it; a model of another order is refused.",
    )
    bucket_cutoffs: list[float] | None = Field(
        None, description="[head_max, middle_max] perplexities; overrides the recorded reference percentiles."
    )

    def plain(self) -> KenLMLoader:
        """The library's value of this resource (what a stage's maker gets)."""
        cutoffs = tuple(self.bucket_cutoffs) if self.bucket_cutoffs is not None else None
        return KenLMLoader(self.model_path, self.order, cutoffs)

    def load(self, layout: Layout) -> ScoringLM:
        """Loaded once per process per model file; checked for format and order."""
        return self.plain().load(layout)
