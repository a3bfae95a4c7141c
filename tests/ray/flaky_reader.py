"""An inbox reader for the ingest retry tests: the text reader, whose read of one file fails once.

Every piece it starts and ends leaves a marker in ``$REFINERY_TEST_MARKERS`` (set on every node of
the test cluster: when, which process, which piece), and the read of the file the test names in a
``fail-once-<file>`` control file there raises a ``ConnectionError`` (what the asset factory
retries), once: the first task to remove the control file fails. The parameters are the real
reader's, so the provenance (and the manifest) of a run with a failure equals a clean run's.
Imported by the Ray workers (the cluster's PYTHONPATH names the repository)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

from assets.factory import ingest_asset
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.collector import FilePiece, IngestBatch
from refinery.kernel.spec import StageSpec


def _log(event: str, piece: FilePiece) -> None:
    folder = Path(os.environ["REFINERY_TEST_MARKERS"])
    (folder / f"{time.time_ns()}-{os.getpid()}-{event}-{piece.index}").touch()


class FlakyReader(SourceReader):
    def read_piece(self, piece: FilePiece) -> Iterator[IngestBatch]:
        if getattr(self._ids, "decided", None):  # an id fix's rereading: not a read of the piece
            return super().read_piece(piece)
        _log("start", piece)
        control = Path(os.environ["REFINERY_TEST_MARKERS"]) / f"fail-once-{piece.path}"
        try:
            control.unlink()
        except FileNotFoundError:
            return self._logged(piece)
        raise ConnectionError(f"injected: the store went away while {piece.path} was read")

    def _logged(self, piece: FilePiece) -> Iterator[IngestBatch]:
        yield from super().read_piece(piece)
        _log("end", piece)


FLAKY_INGEST = StageSpec(
    name="flaky_raw_documents",
    kind="text",
    params=IngestParams,
    description="Test stage: the text inbox, whose read of one file fails once.",
)

flaky_raw_documents = ingest_asset(FLAKY_INGEST, FlakyReader)
