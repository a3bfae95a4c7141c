"""A code location for the killed-worker test: the real text ingest plus a parallel stage whose
processor is slow and leaves a marker file when it starts a batch, so the test can kill the Ray
worker that is processing it (``dagster asset materialize -m tests.ray.slow_stage``)."""

import os
import time
from pathlib import Path

import dagster as dg
import pyarrow as pa

from assets import raw_documents
from assets.factory import stage_asset
from refinery import names
from refinery.batch import BatchResult, split_batch
from refinery.kernel.spec import StageSpec
from resources import build_resources

MARKERS_ENV = "REFINERY_TEST_MARKERS"


class SlowCopy:
    """Keeps every row, adds its length; sleeps per batch and marks which process started it."""

    def __init__(self, markers: str, seconds: float):
        self.markers, self.seconds = Path(markers), seconds

    def __call__(self, frame) -> BatchResult:
        first = frame["id"].iloc[0] if len(frame) else "empty"
        (self.markers / f"{os.getpid()}-{first}-{time.monotonic_ns()}").touch()
        time.sleep(self.seconds)
        return split_batch(frame.assign(chars=frame["text"].str.len()), [None] * len(frame))


SLOW_COPY = StageSpec(
    name="slow_copy",
    kind="text",
    upstream=names.RAW_DOCUMENTS,
    fields=(pa.field("chars", pa.int64()),),
    parallel=True,
    description="Test stage: raw documents, slowly, with their length.",
)

slow_copy = stage_asset(SLOW_COPY, lambda run: SlowCopy(os.environ[MARKERS_ENV], 1.0))

defs = dg.Definitions(assets=[raw_documents, slow_copy], resources=build_resources())
