"""Reading the small tables that accompany media: captions files and questions files.

Both kinds of inbox name their media in a table: JSONL, CSV/TSV or Parquet, one record per
image or question. Every record comes back with its 1-based line (row for Parquet) and the raw
bytes it was parsed from; every line that cannot be parsed comes back as a :class:`BadRecord`
with a reason, so the readers can quarantine it the way the text inbox does.
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from refinery.kernel.surrogates import lone_surrogate, may_hold_surrogates, open_parquet

RECORD_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")


@dataclass
class Record:
    line: int
    record: dict
    raw: bytes


@dataclass
class BadRecord:
    line: int | None
    reason: str
    detail: str
    raw: bytes | None


def _json_bytes(record: dict) -> bytes:
    return json.dumps(record, ensure_ascii=False, default=str).encode("utf-8", "surrogatepass")


def iter_records(path: Path, batch_rows: int = 1_000) -> Iterator[Record | BadRecord]:
    name = path.name.lower()
    if name.endswith(".parquet"):
        yield from _parquet(path, batch_rows)
    elif name.endswith((".csv", ".tsv")):
        yield from _delimited(path, "\t" if name.endswith(".tsv") else ",")
    else:
        yield from _jsonl(path)


def _lines(path: Path) -> Iterator[bytes | BadRecord]:
    """The file's lines as UTF-8 bytes. UTF-16 (with its BOM, as spreadsheets export it) is
    decoded whole and split on line feeds only, as byte lines are."""
    with path.open("rb") as stream:
        head = stream.read(2)
        stream.seek(0)
        if head not in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            yield from stream
            return
        data = stream.read()
    try:
        text = data.decode("utf-16")
    except UnicodeDecodeError as err:
        yield BadRecord(None, "undecodable_bytes", f"UTF-16 file invalid at byte {err.start}", data)
        return
    yield from (line.encode("utf-8") for line in text.split("\n"))


def _jsonl(path: Path) -> Iterator[Record | BadRecord]:
    for line_no, raw in enumerate(_lines(path), start=1):
        if isinstance(raw, BadRecord):
            yield raw
            return
        body = raw.rstrip(b"\r\n")
        if line_no == 1 and body.startswith(codecs.BOM_UTF8):
            body = body[len(codecs.BOM_UTF8) :]
        if not body.strip():
            continue
        try:
            decoded = body.decode("utf-8")
        except UnicodeDecodeError as err:
            yield BadRecord(line_no, "undecodable_bytes", f"not UTF-8 at byte {err.start}", body)
            continue
        try:
            record = json.loads(decoded)
        except json.JSONDecodeError as err:
            yield BadRecord(line_no, "malformed_json", f"{err.msg} at column {err.colno}", body)
            continue
        except ValueError as err:  # an integer past Python's 4300-digit limit
            yield BadRecord(line_no, "malformed_json", str(err), body)
            continue
        if not isinstance(record, dict):
            yield BadRecord(
                line_no, "not_an_object", f"expected a JSON object, got {type(record).__name__}", body
            )
            continue
        where = lone_surrogate(record) if may_hold_surrogates(body) else None
        if where:  # valid JSON, but not text UTF-8 (and so Parquet) can hold
            yield BadRecord(line_no, "invalid_unicode", f"lone surrogate in {where[:200]}", body)
            continue
        yield Record(line_no, record, body)


def _delimited(path: Path, delimiter: str) -> Iterator[Record | BadRecord]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        yield BadRecord(None, "undecodable_bytes", f"not UTF-8 at byte {err.start}", data)
        return
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for row in reader:
            if None in row:  # more cells than the header has
                extra = row.pop(None)
                yield BadRecord(
                    reader.line_num,
                    "malformed_row",
                    f"{len(extra)} cells beyond the header",
                    _json_bytes(row),
                )
                continue
            if all(v in (None, "") for v in row.values()):
                continue
            yield Record(reader.line_num, {k: v for k, v in row.items() if v is not None}, _json_bytes(row))
    except csv.Error as err:
        yield BadRecord(reader.line_num, "malformed_row", str(err), None)


def _parquet(path: Path, batch_rows: int) -> Iterator[Record | BadRecord]:
    try:
        parquet = open_parquet(path)
    except Exception as err:  # pyarrow raises several types for corrupt files
        yield BadRecord(None, "unreadable_parquet", str(err), None)
        return
    row = 0
    try:
        for batch in parquet.iter_batches(batch_size=batch_rows):
            for record in batch.to_pylist():
                row += 1
                yield Record(row, record, _json_bytes(record))
    except Exception as err:
        yield BadRecord(row + 1, "unreadable_parquet", f"stopped after row {row}: {err}", None)


def first_field(record: dict, names: tuple[str, ...]) -> tuple[str | None, object]:
    """(the first of ``names`` present in the record, its value)."""
    for name in names:
        if name in record:
            return name, record[name]
    return None, None


def inside(folder: Path, base: Path, value: str) -> tuple[Path | None, str | None]:
    """``value`` resolved against ``base``, if it stays inside ``folder``; else (None, why)."""
    if not value or not value.strip():
        return None, "empty path"
    candidate = Path(value)
    if candidate.is_absolute():
        return None, f"absolute path {value!r}: paths are relative to the table's folder"
    try:
        resolved = (base / candidate).resolve()
        resolved.is_file()  # raises, unlike later checks, for a NUL byte or a name too long
    except (OSError, ValueError) as err:
        return None, f"{value[:200]!r} is not a usable path: {err}"
    try:
        resolved.relative_to(folder.resolve())
    except ValueError:
        return None, f"{value!r} points outside the source folder"
    return resolved, None
