"""A parallel stage for the retry test: it fails once, on one slice, with a transient error.

Its processor leaves a marker for every slice it starts (when, which process, which first row), and
the batch holding ``fail_id`` raises a ``ConnectionError`` (what the factory retries) the first time,
leaving the flag file that lets the retry through. Imported by the Ray workers (the cluster's
PYTHONPATH names the repository), so nothing in it may depend on the test's process."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from assets.factory import stage_asset
from refinery import names
from refinery.batch import BatchResult, split_batch
from refinery.kernel.spec import StageSpec


class FlakyParams(BaseModel):
    markers: str
    fail_id: str = ""
    min_chars: int = 40


class FlakyCopy:
    """Keeps rows of at least ``min_chars`` characters, adds their length."""

    def __init__(self, params: FlakyParams):
        self.params = params

    def __call__(self, frame) -> BatchResult:
        markers = Path(self.params.markers)
        first = frame["id"].iloc[0] if len(frame) else "empty"
        (markers / f"{time.time_ns()}-{os.getpid()}-{first}").touch()
        flag = markers / "failed-once"
        if self.params.fail_id in set(frame["id"]) and not flag.exists():
            flag.touch()
            raise ConnectionError(f"injected: the store went away while row {self.params.fail_id} was read")
        reasons = [
            None if len(t) >= self.params.min_chars else ("too_short", f"{len(t)} characters")
            for t in frame["text"]
        ]
        return split_batch(frame.assign(chars=frame["text"].str.len()), reasons)


FLAKY_COPY = StageSpec(
    name="flaky_copy",
    kind="text",
    upstream=names.RAW_DOCUMENTS,
    params=FlakyParams,
    fields=(pa.field("chars", pa.int64()),),
    parallel=True,
    description="Test stage: raw documents of some length, failing once on one slice.",
)

flaky_copy = stage_asset(FLAKY_COPY, lambda run: FlakyCopy(run.params))
