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
    """The block's records when every line is a JSON object that the per-line path admits as a
    document (``text``, optionally ``id`` and ``url``: strings or null), else None: the caller then
    reads the block line by line."""
    if not lines:
        return None
    max_line = 4 * max_document_chars + 1024  # the per-line path's "line of N bytes" limit
    last = len(lines) - 1
    for i, line in enumerate(lines):
        end = len(line) - (i < last or line.endswith(b"\n"))
        if line[:1] != b"{" or line[end - 1 : end] != b"}" or end > max_line:
            return None
    data = b"".join(lines)
    try:
        table = pajson.read_json(
            pa.BufferReader(data),
            read_options=pajson.ReadOptions(use_threads=False, block_size=len(data) + 1),
            parse_options=_PARSE,
        )
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != len(lines):
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
    lengths = pc.utf8_length(texts)
    if pc.max(lengths).as_py() > max_document_chars:
        return None
    if pc.any(pc.or_(pc.equal(lengths, 0), pc.utf8_is_space(texts))).as_py():
        return None
    given = ids.drop_null()  # a missing or null id is derived from the text, as on the per-line path
    if len(given) and pc.any(pc.equal(pc.binary_length(given), 0)).as_py():
        return None
    if len(given) and not pc.all(pc.equal(pc.utf8_trim_whitespace(given), given)).as_py():
        return None
    return ParsedBlock(ids=ids, texts=texts, urls=columns["url"])


def derived_ids(texts: pa.Array, rows: list[int]) -> list[str]:
    """:func:`refinery.ids.content_id` of the texts at ``rows``, hashed from Arrow's UTF-8 bytes
    (the bytes ``str.encode`` gives: no copy into Python strings)."""
    if not rows:
        return []
    offsets = np.frombuffer(texts.buffers()[1], dtype=np.int64)[texts.offset : texts.offset + len(texts) + 1]
    data = memoryview(texts.buffers()[2])
    return [content_id_of_utf8(data[offsets[i] : offsets[i + 1]]) for i in rows]
