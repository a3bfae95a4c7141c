"""What every inbox reader shares: the batches of rows and quarantine rows it collects, its counts,
and the listing of a source folder's files.

Each inbox kind (text, SFT, image–text, video) has its own reader in its domain package; they all
derive from :class:`RowCollector`, so :func:`refinery.kernel.ingest.ingest_with_reader` writes any
of them and the invariant checks read any of them the same way.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from pydantic import BaseModel

from refinery.ids import IdAssigner
from refinery.kernel.surrogates import display_name
from refinery.schema import DOCUMENT_SCHEMA, QUARANTINE_SCHEMA

MAX_RAW_FILE_BYTES = 16 * 1024 * 1024  # file-level quarantine keeps the bytes up to this size


@dataclass
class IngestBatch:
    documents: list[dict] = field(default_factory=list)
    quarantine: list[dict] = field(default_factory=list)
    # Documents admitted a block at a time, already in Arrow (the reader's SCHEMA); they come
    # before ``documents`` in reading order. Only readers told ``arrow_blocks`` make them.
    table: pa.Table | None = None

    def __len__(self) -> int:
        table_rows = 0 if self.table is None else self.table.num_rows
        return len(self.documents) + len(self.quarantine) + table_rows


@dataclass
class IngestStats:
    files: Counter = field(default_factory=Counter)  # file -> records seen
    blank_lines: int = 0
    documents: int = 0
    quarantined: int = 0
    reasons: Counter = field(default_factory=Counter)
    input_bytes: int = 0
    skipped: Counter = field(default_factory=Counter)  # records that are not documents, by kind


@dataclass(frozen=True)
class FilePiece:
    """One task's share of a source folder: a whole file, or the lines of a plain JSONL file that
    start in the byte range ``[start, end)`` (``first_line`` is the number of the first of them, so
    every row keeps the line number a reading of the whole file gives). ``index`` names its part."""

    index: int
    path: str  # relative to the source folder, as a POSIX path
    size: int
    start: int = 0
    end: int | None = None  # None: the whole file
    first_line: int = 1


def source_files(folder: Path) -> list[Path]:
    """Every non-hidden file under the source folder, in a stable order."""
    if not folder.is_dir():
        return []
    files = [
        p
        for p in folder.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    return sorted(files, key=lambda p: p.relative_to(folder).as_posix())


def matching_suffix(path: Path, suffixes: tuple[str, ...]) -> str | None:
    name = path.name.lower()
    return next((s for s in suffixes if name.endswith(s)), None)


class RowCollector:
    """What every inbox reader (text, SFT, image–text, video) shares: it collects documents and
    quarantine rows into batches of ``params.batch_rows`` and counts them per file and reason, so
    that :func:`refinery.kernel.ingest.ingest_with_reader` can write any of them. A subclass names
    the schemas of its rows and quarantine rows, and the column its invariant checks read."""

    SCHEMA: pa.Schema = DOCUMENT_SCHEMA
    QUARANTINE_SCHEMA: pa.Schema = QUARANTINE_SCHEMA
    TEXT_COLUMN: str = "text"
    RECORD_UNIT: str = "rows"  # what one input row is called in the UI ("records", "rows")
    # True when each file reads on its own (no row depends on another file): ingest may then run one
    # task per file, or per byte range (:meth:`splittable`), on a distributed engine
    # (refinery.kernel.ingest_tasks). Readers that match files with each other (images named by a
    # captions table) leave it False and read the folder in one process.
    PER_FILE: bool = False
    piece: FilePiece | None = None  # set on a worker: read only this share of the folder
    # Set by a writer that takes IngestBatch.table (refinery.kernel.ingest, ingest_tasks): the
    # reader may then admit clean blocks of records straight into Arrow.
    arrow_blocks: bool = False

    def __init__(self, folder: Path, source: str, params: BaseModel):
        self.folder = folder
        self.source = source
        self.params = params
        self.stats = IngestStats()
        self._ids = IdAssigner()
        self._batch = IngestBatch()

    def _drain(self, final: bool) -> Iterator[IngestBatch]:
        size = len(self._batch)
        if size and (final or size >= self.params.batch_rows):
            batch, self._batch = self._batch, IngestBatch()
            yield batch

    def batches(self) -> Iterator[IngestBatch]:
        raise NotImplementedError

    def splittable(self, path: Path) -> bool:
        """Whether ``path`` may be read as byte ranges cut at newlines (a plain JSONL file)."""
        return False

    def use_ids(self, assigner: IdAssigner) -> None:
        """Hand out ids with ``assigner`` (a task's, which defers the source-wide decisions)."""
        self._ids = assigner

    def read_piece(self, piece: FilePiece) -> Iterator[IngestBatch]:
        """The batches of one file, or of one byte range of it (a worker's task)."""
        self.piece = piece
        return self.batches()

    def _files(self) -> Iterator[tuple[Path, str]]:
        """Every file of the source folder (or the piece's one file) with its relative name,
        counted in the stats (listed even when it yields nothing; its bytes once, by the piece
        that starts it)."""
        piece = self.piece
        paths = source_files(self.folder) if piece is None else [self.folder / piece.path]
        for path in paths:
            rel = display_name(path.relative_to(self.folder).as_posix())  # names need not be UTF-8
            self.stats.files[rel] += 0
            if piece is None or piece.start == 0:
                self.stats.input_bytes += path.stat().st_size if piece is None else piece.size
            yield path, rel

    def report(self) -> dict:
        """What the kind shows beyond the shared inbox figures (called after :meth:`batches`)."""
        return {}

    def summary(self) -> dict:
        """Counts of the kind saved in the partition's stats file (called after :meth:`batches`)."""
        return {}

    def _quarantine(
        self,
        rel: str,
        line: int | None,
        reason: str,
        detail: str,
        raw: bytes | None,
        doc_id: str | None = None,
        text: str | None = None,
        **fields: object,
    ) -> None:
        """One quarantine row: where it came from, its id and text (in the reader's text column:
        ``text``, ``prompt``, ``caption`` or ``question``) where known, the kind's own columns
        (``fields``), the raw bytes (up to MAX_RAW_FILE_BYTES) and why."""
        if raw is not None and len(raw) > MAX_RAW_FILE_BYTES:
            detail += f" ({len(raw)} bytes not copied)"
            raw = None
        self._quarantine_row(rel, line, reason, detail, raw, id=doc_id, **{self.TEXT_COLUMN: text}, **fields)

    def _quarantine_row(
        self, rel: str, line: int | None, reason: str, detail: str, raw: bytes | None, **fields: object
    ) -> None:
        self.stats.files[rel] += 1
        self.stats.quarantined += 1
        self.stats.reasons[reason] += 1
        self._batch.quarantine.append(
            {
                "source": self.source,
                "file": rel,
                "line": line,
                **fields,
                "raw": raw,
                "reason": reason,
                "reason_detail": detail,
            }
        )
