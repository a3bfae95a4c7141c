"""Parse one source folder of the text inbox into documents and quarantine rows.

Bad input never fails the run and never vanishes: every malformed line, undecodable byte run,
missing or empty ``text``, oversized document, corrupt archive or unsupported file becomes a
quarantine row that names the file, the line and the reason, and keeps the raw bytes.

Besides records (JSONL, Parquet, text files) a source folder may hold web pages and documents
that are parsed into text here: HTML pages (:mod:`refinery.ingest.html`), WARC crawl files with
one document per HTML response (:mod:`refinery.ingest.warc`) and PDFs (:mod:`refinery.ingest.pdf`).
Their metadata (title, charset, crawl date, page offsets…) goes into ``meta``.
"""

from __future__ import annotations

import codecs
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.ingest.html import HTML_SUFFIXES, UndecodableHtml, decode_html, extract_html
from refinery.ingest.jsonl_blocks import derived_ids, parse_block
from refinery.ingest.pdf import PDF_SUFFIXES, PdfProblem, extract_pdf
from refinery.ingest.warc import WARC_SUFFIXES, iter_warc, read_at_most
from refinery.kernel.collector import (
    MAX_RAW_FILE_BYTES,
    IngestBatch,
    RowCollector,
    matching_suffix,
)
from refinery.kernel.surrogates import lone_surrogate, may_hold_surrogates, open_parquet
from refinery.metadata import Json

RECORD_SUFFIXES = (".jsonl", ".jsonl.gz", ".parquet", ".txt")
TEXT_SUFFIXES = RECORD_SUFFIXES + WARC_SUFFIXES + HTML_SUFFIXES + PDF_SUFFIXES
GZIP_MAGIC = b"\x1f\x8b"
KNOWN_FIELDS = {"text", "id", "url", "meta"}


class ReaderParams(BaseModel):
    """What every inbox reader takes: the size limit of a record and the batch size. Readers of
    kinds without web pages or PDFs (SFT) take only these, so their config offers no option that
    would do nothing."""

    max_document_chars: int = Field(1_000_000, description="Longer documents are quarantined as oversized.")
    batch_rows: int = Field(5_000, description="Documents per batch handed to the writer.")
    split_bytes: int = Field(
        256 * 1024 * 1024,
        ge=0,
        description="On a distributed engine (ray) ingest runs one task per file; a plain JSONL file "
        "larger than this is read as byte ranges of this size (cut at newlines), one task each. "
        "0: never split. The output is the same either way.",
    )


class IngestParams(ReaderParams):
    """How the text inbox is read. Defaults suit web-scale text."""

    # Web pages, crawls and PDFs -------------------------------------------------------------
    html_extractor: Literal["resiliparse", "trafilatura"] = Field(
        "resiliparse",
        description="Main-content extractor for HTML pages and WARC responses (measured in "
        "benchmarks/bench_parsing.py: resiliparse keeps all main text, trafilatura 88%, and is 24x faster).",
    )
    html_drop_nav_lines: bool = Field(
        True,
        description="Remove pager rows ('Prev Home Next', Texinfo 'Next: … Up: …') left by the extractor.",
    )
    html_heading_marks: bool = Field(
        False,
        description="Write HTML headings as markdown '# Title' lines. Off by default: Gopher's '#' rule "
        "counts every '#' and would reject ~7% of documentation pages for their headings alone.",
    )
    html_main_container: bool = Field(
        True,
        description="resiliparse: where a page marks its main element (<main>, role=main), extract it "
        "whole (navigation, asides, link-only tables of contents inside it dropped) instead of the "
        "main-content heuristics, which drop API-reference lists (benchmarks/bench_html_lists.py).",
    )
    min_main_content_chars: int = Field(
        1, description="A page whose extracted main text is shorter is quarantined as html_no_main_content."
    )
    max_record_bytes: int = Field(
        8 * 1024 * 1024,
        description="Largest HTML file or WARC payload read, counted after content decoding, so a gzip "
        "bomb stops here; larger ones are quarantined as oversized. Common Crawl caps payloads at 1 MiB.",
    )
    max_pdf_bytes: int = Field(100 * 1024 * 1024, description="Larger PDF files are quarantined (oversized).")
    max_pdf_pages: int = Field(2_000, description="PDFs with more pages are quarantined as oversized.")
    max_pdf_stream_bytes: int = Field(
        64 * 1024 * 1024,
        description="Limit on any one decompressed PDF stream (content, image, font): a PDF bomb stops here.",
    )


class SourceReader(RowCollector):
    """Reads one source folder; iterate :meth:`batches`, then read :attr:`stats`.

    Subclasses for other record kinds (SFT) set ``SUFFIXES``, extend :meth:`_read_file` and
    override :meth:`_admit`; byte-level handling stays here, shared.
    """

    SUFFIXES: tuple[str, ...] = TEXT_SUFFIXES
    RECORD_UNIT = "records"
    PER_FILE = True  # every file reads on its own: one task per file (or JSONL range) on a cluster
    PARQUET_COLUMNS: tuple[str, ...] = ("text",)  # a Parquet file without them is quarantined whole

    def __init__(self, folder: Path, source: str, params: ReaderParams | None = None):
        super().__init__(folder, source, params or IngestParams())

    def report(self) -> dict:
        return {
            "blank_lines_skipped": self.stats.blank_lines,
            "records_skipped": Json(dict(self.stats.skipped)),  # e.g. WARC requests, non-HTML responses
        }

    def summary(self) -> dict:
        return {"records_skipped": dict(self.stats.skipped)}

    def splittable(self, path: Path) -> bool:
        """A plain JSONL file (not gzip, not UTF-16) reads as byte ranges cut at newlines."""
        if matching_suffix(path, self.SUFFIXES) != ".jsonl":
            return False
        with path.open("rb") as probe:
            head = probe.read(4)
        return not head.startswith((GZIP_MAGIC, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))

    # -- public -------------------------------------------------------------------------------
    def batches(self) -> Iterator[IngestBatch]:
        for path, rel in self._files():
            kind = matching_suffix(path, self.SUFFIXES)
            problem = _unreadable(path)
            if problem:
                self._quarantine(rel, None, "unreadable_file", problem, None)
            elif kind is None:
                self._quarantine_file(
                    path, rel, "unsupported_file_type", f"expected one of {', '.join(self.SUFFIXES)}"
                )
            else:
                yield from self._read_file(path, rel, kind)
            yield from self._drain(final=False)
        yield from self._drain(final=True)

    def _read_file(self, path: Path, rel: str, kind: str) -> Iterator[IngestBatch]:
        if kind == ".parquet":
            yield from self._read_parquet(path, rel)
        elif kind == ".txt":
            self._read_text_file(path, rel)
        elif kind in WARC_SUFFIXES:
            yield from self._read_warc(path, rel)
        elif kind in HTML_SUFFIXES:
            self._read_html_file(path, rel)
        elif kind in PDF_SUFFIXES:
            self._read_pdf(path, rel)
        else:
            yield from self._read_jsonl(path, rel)

    def _quarantine_file(self, path: Path, rel: str, reason: str, detail: str) -> None:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_RAW_FILE_BYTES else None
        if raw is None:
            detail += f" (file of {size} bytes left in the inbox, not copied)"
        self._quarantine(rel, None, reason, detail, raw)

    def _admit(self, record: object, rel: str, line: int, raw: bytes | None) -> None:
        """Validate one parsed record and append it as a document or a quarantine row."""
        if not isinstance(record, dict):
            self._quarantine(
                rel, line, "not_an_object", f"expected a JSON object, got {type(record).__name__}", raw
            )
            return
        text = record.get("text")
        if "text" not in record:
            self._quarantine(rel, line, "missing_text", "record has no 'text' field", raw)
            return
        if not isinstance(text, str):
            self._quarantine(rel, line, "text_not_string", f"'text' is {type(text).__name__}", raw)
            return
        if not text or text.isspace():  # `not text.strip()` without copying the text
            self._quarantine(rel, line, "empty_text", "'text' is empty or whitespace only", raw)
            return
        if len(text) > self.params.max_document_chars:
            self._quarantine(
                rel,
                line,
                "oversized",
                f"{len(text)} characters > max_document_chars {self.params.max_document_chars}",
                raw,
                text=text,
            )
            return
        if record.get("id") is not None:
            doc_id, error = self._ids.explicit(record["id"])
            if error:
                self._quarantine(rel, line, error.split(":")[0], error, raw, text=text)
                return
        else:
            doc_id = self._ids.derived(text)
        url = record.get("url")
        self.stats.files[rel] += 1
        self.stats.documents += 1
        self._batch.documents.append(
            {
                "id": doc_id,
                "text": text,
                "source": self.source,
                "url": None if url is None else str(url),
                "meta": meta_json(record, KNOWN_FIELDS),
                "file": rel,
                "line": line,
            }
        )

    # -- formats ------------------------------------------------------------------------------
    def _read_jsonl(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        piece = self.piece
        if piece is not None and piece.end is not None:
            yield from self._read_jsonl_range(path, rel, piece.start, piece.end, piece.first_line)
            return
        with path.open("rb") as probe:
            head = probe.read(4)
        if head[:2] == GZIP_MAGIC:
            yield from self._read_jsonl_stream(gzip.open(path, "rb"), rel)  # noqa: SIM115 - closed by the reader
        elif head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            yield from self._read_utf16_jsonl(path, rel)
        else:
            yield from self._read_jsonl_stream(path.open("rb"), rel)

    def _read_jsonl_stream(self, stream, rel: str) -> Iterator[IngestBatch]:
        read = [0]  # lines read so far, for where a corrupt archive broke
        try:
            with stream:
                yield from self._read_lines(stream, rel, 1, read)
        except (EOFError, OSError, zlib.error) as err:
            # A truncated or corrupt archive: keep what was read, record where it broke.
            line_no = read[0]
            self._quarantine(
                rel, line_no + 1, "corrupt_archive", f"stopped reading after line {line_no}: {err}", None
            )

    def _read_jsonl_range(
        self, path: Path, rel: str, start: int, end: int, first_line: int
    ) -> Iterator[IngestBatch]:
        """The lines that start in ``[start, end)``: a line crossing ``end`` is read whole here
        and skipped by the next range, so every line is read once, by the range it starts in."""
        read = [first_line - 1]
        try:
            with path.open("rb") as stream:
                if start > 0:
                    stream.seek(start - 1)
                    stream.readline()  # the rest of the line the previous range reads
                yield from self._read_lines(_lines_before(stream, end), rel, first_line, read)
        except OSError as err:
            line_no = read[0]
            self._quarantine(
                rel, line_no + 1, "corrupt_archive", f"stopped reading after line {line_no}: {err}", None
            )

    def _read_lines(
        self, lines: Iterable[bytes], rel: str, first_line: int, read: list[int]
    ) -> Iterator[IngestBatch]:
        """Parse and admit every line of ``lines`` (numbered from ``first_line``; ``read[0]`` is
        the number of the last one read). Where the batch is empty and blocks are on, the next
        ``batch_rows`` lines are read as one block (:meth:`_admit_block`), else line by line; an
        error from the stream is raised after the lines read before it are admitted."""
        lines = iter(lines)
        blocks = self._blocks_on()
        line_no = first_line - 1
        while True:
            if blocks and not len(self._batch):
                block, error = _take(lines, self.params.batch_rows)
                if block and self._admit_block(block, rel, line_no + 1):
                    line_no += len(block)
                    read[0] = line_no
                    yield from self._drain(final=False)
                else:
                    for raw in block:
                        line_no += 1
                        read[0] = line_no
                        self._parse_jsonl_line(raw, rel, line_no)
                        yield from self._drain(final=False)
                if error is not None:
                    raise error
                if len(block) < self.params.batch_rows:
                    return
                continue
            raw = next(lines, None)
            if raw is None:
                return
            line_no += 1
            read[0] = line_no
            self._parse_jsonl_line(raw, rel, line_no)
            yield from self._drain(final=False)

    def _blocks_on(self) -> bool:
        """Blocks only where the writer takes them and the admission is this class's own (a
        subclass with its own record kind, SFT, reads line by line)."""
        cls = type(self)
        return (
            self.arrow_blocks
            and cls._admit is SourceReader._admit
            and cls._parse_jsonl_line is SourceReader._parse_jsonl_line
        )

    def _admit_block(self, block: list[bytes], rel: str, first_line: int) -> bool:
        """Admit a block of lines parsed straight into Arrow, as the per-line path would, when
        :func:`parse_block` says every line is a clean record with its own id; False (nothing
        admitted) otherwise. The ids go through the id assigner in order, so an id seen before
        is quarantined here exactly as :meth:`_admit` does it."""
        parsed = parse_block(block, self.params.max_document_chars)
        if parsed is None:
            return False
        keep: list[int] = []
        doc_ids: list[str] = []
        given = parsed.ids.to_pylist()
        bases = iter(derived_ids(parsed.texts, [i for i, value in enumerate(given) if value is None]))
        for i, value in enumerate(given):
            if value is None:  # the per-line path's IdAssigner.derived(text): claim(content_id(text))
                keep.append(i)
                doc_ids.append(self._ids.claim(next(bases)))
                continue
            doc_id, error = self._ids.explicit(value)
            if error:
                text = parsed.texts[i].as_py()
                body = block[i].rstrip(b"\r\n")
                self._quarantine(rel, first_line + i, error.split(":")[0], error, body, text=text)
            else:
                keep.append(i)
                doc_ids.append(doc_id)
        n = len(keep)
        texts, urls = parsed.texts, parsed.urls
        lines = np.arange(first_line, first_line + len(block), dtype=np.int64)
        if n != len(block):
            chosen = pa.array(keep, pa.int64())
            texts, urls, lines = texts.take(chosen), urls.take(chosen), lines[keep]
        self._batch.table = pa.Table.from_arrays(
            [
                pa.array(doc_ids, pa.string()),
                texts,
                pa.array([self.source] * n, pa.string()),
                urls,
                pa.nulls(n, pa.string()),
                pa.array([rel] * n, pa.string()),
                pa.array(lines, pa.int64()),
            ],
            schema=self.SCHEMA,
        )
        self.stats.files[rel] += n
        self.stats.documents += n
        return True

    def _parse_jsonl_line(self, raw: bytes, rel: str, line_no: int) -> None:
        body = raw.rstrip(b"\r\n")
        if body.startswith(codecs.BOM_UTF8):
            body = body[len(codecs.BOM_UTF8) :]
        if not body or body.isspace():  # what `not body.strip()` finds, without copying the line
            self.stats.blank_lines += 1
            return
        if len(body) > 4 * self.params.max_document_chars + 1024:
            self._quarantine(rel, line_no, "oversized", f"line of {len(body)} bytes", body)
            return
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as err:
            self._quarantine(
                rel,
                line_no,
                "undecodable_bytes",
                f"not UTF-8 at byte {err.start}: {body[err.start : err.start + 8]!r}",
                body,
            )
            return
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as err:
            self._quarantine(rel, line_no, "malformed_json", f"{err.msg} at column {err.colno}", body)
            return
        except ValueError as err:  # an integer past Python's 4300-digit limit
            self._quarantine(rel, line_no, "malformed_json", str(err), body)
            return
        where = lone_surrogate(record) if may_hold_surrogates(body) else None
        if where:  # valid JSON, but not text UTF-8 (and so Parquet) can hold
            self._quarantine(rel, line_no, "invalid_unicode", f"lone surrogate in {where[:200]}", body)
            return
        self._admit(record, rel, line_no, body)

    def _read_utf16_jsonl(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        data = path.read_bytes()
        try:
            text = data.decode("utf-16")
        except UnicodeDecodeError as err:
            self._quarantine(rel, None, "undecodable_bytes", f"UTF-16 file invalid at byte {err.start}", data)
            return
        for line_no, line in enumerate(text.split("\n"), start=1):  # not splitlines(): U+2028 is text
            self._parse_jsonl_line(line.encode("utf-8", "surrogatepass"), rel, line_no)
            yield from self._drain(final=False)

    def _read_text_file(self, path: Path, rel: str) -> None:
        data = path.read_bytes()
        text, error = _decode_text_file(data)
        if error:
            self._quarantine(rel, 1, "undecodable_bytes", error, data)
            return
        self._admit({"text": text}, rel, 1, data if len(data) <= MAX_RAW_FILE_BYTES else None)

    # -- web pages, crawls, PDFs ------------------------------------------------------------------
    def _admit_extracted(
        self, text: str, rel: str, line: int, url: str | None, meta: dict, raw: bytes | None
    ) -> None:
        """A document parsed out of a page or file: same checks as a record's ``text``."""
        record = {"text": text, "meta": meta}
        if url is not None:
            record["url"] = url
        self._admit(record, rel, line, raw)

    def _html_document(
        self, data: bytes, rel: str, line: int, url: str | None, http_charset: str | None, meta: dict
    ) -> None:
        """Decode and extract one HTML page (a file or a WARC payload), or quarantine it."""
        p = self.params
        try:
            decoded = decode_html(data, http_charset)
        except UndecodableHtml as err:
            self._quarantine(rel, line, "undecodable_bytes", str(err), data)
            return
        try:
            page = extract_html(
                decoded.text,
                p.html_extractor,
                url,
                p.html_drop_nav_lines,
                p.html_heading_marks,
                main_container=p.html_main_container,
            )
        except Exception as err:  # the extractors' parsers raise their own types on broken markup
            self._quarantine(rel, line, "html_unparsable", f"{type(err).__name__}: {err}", data)
            return
        meta = {**meta, "charset": decoded.charset, "charset_source": decoded.charset_source}
        if decoded.declared:
            meta["charset_declared"] = decoded.declared
        if page.title:
            meta["title"] = page.title
        meta.update(page.meta)
        meta["extractor"] = p.html_extractor
        if len(page.text.strip()) < p.min_main_content_chars:
            self._quarantine(
                rel,
                line,
                "html_no_main_content",
                f"{p.html_extractor} found {len(page.text.strip())} characters of main text "
                f"(< min_main_content_chars {p.min_main_content_chars}) in {len(decoded.text)}",
                data,
                text=page.text or None,
            )
            return
        self._admit_extracted(page.text, rel, line, url, meta, data)

    def _read_html_file(self, path: Path, rel: str) -> None:
        with path.open("rb") as stream:
            data, more = read_at_most(stream.read, self.params.max_record_bytes)
        if more:
            limit = self.params.max_record_bytes
            self._quarantine_file(path, rel, "oversized", f"HTML file larger than max_record_bytes {limit}")
            return
        self._html_document(data, rel, 1, None, None, {})

    def _read_warc(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        """One document per HTML response record; ``line`` is the record's ordinal."""
        ordinal = 0
        try:
            for entry in iter_warc(path, self.params.max_record_bytes):
                ordinal = entry.ordinal
                if entry.action == "skip":
                    self.stats.skipped[entry.skip_key] += 1
                elif entry.action == "quarantine":
                    detail = f"{entry.detail} (record {entry.meta.get('warc_record_id')}, {entry.url})"
                    self._quarantine(rel, entry.ordinal, entry.reason, detail, entry.body)
                else:
                    meta = {k: v for k, v in entry.meta.items() if v is not None}
                    self._html_document(entry.body, rel, entry.ordinal, entry.url, entry.http_charset, meta)
                yield from self._drain(final=False)
        except (OSError, ValueError, zlib.error) as err:
            # The stream cannot be parsed past this point: keep what was read, record where it broke.
            self._quarantine(
                rel, ordinal + 1, "corrupt_archive", f"stopped reading after record {ordinal}: {err}", None
            )

    def _read_pdf(self, path: Path, rel: str) -> None:
        p = self.params
        size = path.stat().st_size
        if size > p.max_pdf_bytes:
            detail = f"PDF of {size} bytes > max_pdf_bytes {p.max_pdf_bytes}"
            self._quarantine_file(path, rel, "oversized", detail)
            return
        data = path.read_bytes()
        try:
            pdf = extract_pdf(data, p.max_pdf_pages, p.max_pdf_stream_bytes)
        except PdfProblem as problem:
            raw = data if size <= MAX_RAW_FILE_BYTES else None
            self._quarantine(rel, 1, problem.reason, problem.detail, raw)
            return
        self._admit_extracted(pdf.text, rel, 1, None, pdf.meta, None)

    def _read_parquet(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        try:
            parquet = open_parquet(path)
        except Exception as err:  # pyarrow raises several types for corrupt files
            self._quarantine_file(path, rel, "unreadable_parquet", str(err))
            return
        missing = [c for c in self.PARQUET_COLUMNS if c not in parquet.schema_arrow.names]
        if missing:
            self._quarantine_file(
                path,
                rel,
                f"missing_{missing[0]}",
                f"parquet has no '{missing[0]}' column (columns: {parquet.schema_arrow.names})",
            )
            return
        row = 0
        try:
            for batch in parquet.iter_batches(batch_size=self.params.batch_rows):
                for record in batch.to_pylist():
                    row += 1
                    self._admit(self._parquet_record(record), rel, row, None)
                yield from self._drain(final=False)
        except Exception as err:
            self._quarantine(rel, row + 1, "unreadable_parquet", f"stopped after row {row}: {err}", None)

    def _parquet_record(self, record: dict) -> dict:
        """One Parquet row as the record :meth:`_admit` validates."""
        return record


def _take(lines: Iterator[bytes], n: int) -> tuple[list[bytes], Exception | None]:
    """The next ``n`` lines (fewer at the end), and the stream's error if reading stopped on one:
    the lines read before it are still admitted."""
    block: list[bytes] = []
    try:
        for raw in lines:
            block.append(raw)
            if len(block) == n:
                break
    except (EOFError, OSError, zlib.error) as err:
        return block, err
    return block, None


def _lines_before(stream, end: int) -> Iterator[bytes]:
    """The lines of ``stream`` that start before byte ``end``."""
    position = stream.tell()
    while position < end:
        raw = stream.readline()
        if not raw:
            return
        position += len(raw)
        yield raw


def _unreadable(path: Path) -> str | None:
    """Why a file cannot be opened for reading (permissions, an I/O error), or None."""
    try:
        with path.open("rb") as stream:
            stream.read(1)
    except OSError as err:
        return f"cannot read the file: {type(err).__name__}: {err.strerror or err}"
    return None


def _decode_text_file(data: bytes) -> tuple[str, str | None]:
    """Decode a whole text file: UTF-8 (with or without BOM) or BOM-marked UTF-16."""
    try:
        if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return data.decode("utf-16"), None
        return data.decode("utf-8-sig"), None
    except UnicodeDecodeError as err:
        return "", f"not valid {err.encoding} at byte {err.start}: {data[err.start : err.start + 8]!r}"


def meta_json(record: dict, modelled: set[str] | frozenset[str]) -> str | None:
    """The record's ``meta`` plus every field not ``modelled`` in a column, so nothing is dropped."""
    extra = {k: v for k, v in record.items() if k not in modelled}
    meta = record.get("meta")
    if extra:
        if meta is None:
            meta = extra
        elif isinstance(meta, dict):
            meta = {**meta, **{k: v for k, v in extra.items() if k not in meta}}
        else:
            meta = {"meta": meta, **extra}
    return None if meta is None else json.dumps(meta, ensure_ascii=False, sort_keys=True, default=str)
