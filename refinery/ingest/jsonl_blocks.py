"""JSON Lines admitted a block of lines at a time, parsed straight into Arrow.

Most inbox files are clean: every line one object with a non-empty ``text`` (and a string ``id``).
Parsed line by line, each such line costs a ``json.loads``, a dict, the admission's checks and,
later, the conversion of its Python strings back into Arrow (most of ``raw_documents``' own time).
:func:`parse_block` parses a whole block with ``pyarrow.json`` instead, and answers only when
every line of the block is one that the per-line path admits as a document with its own id: the
block's records, in order, with exactly the strings ``json.loads`` gives. For anything else (a blank
line, a line that is not one JSON object, a missing, empty, oversized or non-string ``text``, an
id that is not a string or null, padded or empty, any other field, a lone surrogate escape, a
control byte, bytes that are not UTF-8, a duplicate key) it answers None and the reader reads the block line
by line, so every quarantine reason, detail and id rule stays the per-line path's. Duplicate ids
are not decided here: the reader hands each id to its id assigner, in order, as the per-line path does.

Why the answer is the per-line path's: the lines are checked to be one object each (``{`` first,
``}`` last, as many rows as lines: Arrow cuts rows at newlines and parses each with RapidJSON,
which refuses a control byte inside a string or key and takes a tab or carriage return between
tokens, as ``json.loads`` does), the schema admits only ``id``, ``text`` and ``url`` as strings
(Arrow rejects a number or object for a string column, a duplicate key and any other key), and
Arrow's whitespace is ``str.isspace``'s (``refinery.stats.UNICODE_SPACES``), so its empty-text and
padded-id tests are the per-line path's ``isspace`` and ``strip``. RapidJSON refuses every lone
surrogate escape (high without low, low alone, reversed: ``tests/unit/test_jsonl_blocks.py``) and
decodes a valid pair as ``json.loads`` does, so the per-line path's ``invalid_unicode`` rows never
come out of a block. Arrow does not check that the strings are UTF-8: :func:`parse_block`
validates them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from refinery.ids import content_id_of_utf8
from refinery.ingest.line_blocks import LineBlock

BLOCK_SCHEMA = pa.schema([("id", pa.string()), ("text", pa.large_string()), ("url", pa.string())])
_PARSE = pajson.ParseOptions(
    explicit_schema=BLOCK_SCHEMA, unexpected_field_behavior="error", newlines_in_values=False
)


@dataclass
class ParsedBlock:
    """The records of a block of lines, one per line, in order."""

    ids: pa.Array  # string, each given one valid (not empty, no surrounding whitespace); null: derive it
    texts: pa.Array  # large_string, each non-empty, not whitespace only, within the size limit
    urls: pa.Array  # string, null where the record has none


def parse_block(lines: list[bytes], max_document_chars: int) -> ParsedBlock | None:
    """:func:`parse_lines` of lines read one by one."""
    return parse_lines(LineBlock.of(lines), max_document_chars) if lines else None


def parse_lines(block: LineBlock, max_document_chars: int) -> ParsedBlock | None:
    """The block's records when every line is a JSON object that the per-line path admits as a
    document (``text``, optionally ``id`` and ``url``: strings or null), else None: the caller then
    reads the block line by line."""
    if not len(block) or not _one_object_per_line(block, 4 * max_document_chars + 1024):
        return None
    data = block.data
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=_PARSE,
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != len(block):
        return None
    columns = {}
    for name in BLOCK_SCHEMA.names:
        column = table.column(name)
        array = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
        try:
            array.validate(full=True)  # UTF-8: Arrow's JSON reader copies string bytes unchecked
        except pa.ArrowInvalid:
            return None
        columns[name] = array
    ids, texts = columns["id"], columns["text"]
    if texts.null_count:
        return None  # a missing or null text: the per-line path decides
    if _longest_chars(texts, max_document_chars) > max_document_chars:
        return None
    if pc.any(pc.or_(pc.equal(pc.binary_length(texts), 0), pc.utf8_is_space(texts))).as_py():
        return None
    given = ids.drop_null()  # a missing or null id is derived from the text, as on the per-line path
    if len(given) and pc.any(pc.equal(pc.binary_length(given), 0)).as_py():
        return None
    if len(given) and not pc.all(pc.equal(pc.utf8_trim_whitespace(given), given)).as_py():
        return None
    return ParsedBlock(ids=ids, texts=texts, urls=columns["url"])


def _longest_chars(texts: pa.Array, limit: int) -> int:
    """The most characters in one of ``texts`` (valid UTF-8), or its most bytes where that is
    within ``limit``: a text has no more characters than bytes, and the byte lengths are read from
    the offsets, where counting characters reads every byte (~20 ms on the 105 MB corpus)."""
    most_bytes = pc.max(pc.binary_length(texts)).as_py()
    return most_bytes if most_bytes <= limit else pc.max(pc.utf8_length(texts)).as_py()


def _one_object_per_line(block: LineBlock, max_line: int) -> bool:
    """Whether every line starts with ``{``, ends with ``}`` (before its newline) and is no longer
    than ``max_line`` bytes (the per-line path's "line of N bytes" limit): checked on the block's
    bytes at each line's bounds, without a bytes object per line."""
    data = np.frombuffer(block.data, dtype=np.uint8)
    ends = np.array(block.ends, dtype=np.int64)
    starts = np.concatenate(([0], ends[:-1]))
    if np.any(ends <= starts):
        return False  # an empty line (only a list of lines can hold one: a file's hold their newline)
    stops = ends - (data[ends - 1] == ord("\n"))
    if int((stops - starts).max()) > max_line:
        return False
    # a line of nothing but its newline fails the first test before the second reads outside it
    return bool(np.all(data[starts] == ord("{")) and np.all(data[np.maximum(stops - 1, 0)] == ord("}")))


def derived_ids(texts: pa.Array, rows: list[int]) -> list[str]:
    """:func:`refinery.ids.content_id` of the texts at ``rows``, hashed from Arrow's UTF-8 bytes
    (the bytes ``str.encode`` gives: no copy into Python strings)."""
    if not rows:
        return []
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = memoryview(texts.buffers()[2])
    return [content_id_of_utf8(data[offsets[i] : offsets[i + 1]]) for i in rows]
