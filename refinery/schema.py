"""The columns every text stage agrees on, and the reason columns of every rejected file.

Stages add their score columns to whatever they receive, so an output always carries the full
history of scores that led to it (``id``, ``text``, ``source`` first, then each stage's columns).
"""

from __future__ import annotations

import pyarrow as pa

DOCUMENT_FIELDS = [
    pa.field("id", pa.string(), nullable=False),
    pa.field("text", pa.large_string(), nullable=False),
    pa.field("source", pa.string(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("meta", pa.string()),  # the input's ``meta`` object, as JSON
    pa.field("file", pa.string()),  # path of the inbox file, relative to the source folder
    pa.field("line", pa.int64()),  # 1-based line (JSONL), row (Parquet) or 1 (text file)
]
DOCUMENT_SCHEMA = pa.schema(DOCUMENT_FIELDS)

REASON_FIELDS = [
    pa.field("reason", pa.string(), nullable=False),  # short code, for grouping and SQL
    pa.field("reason_detail", pa.string()),  # the measured value against the threshold
]

# What a stage appends to rejected rows beyond the reason, when it names another document.
DUPLICATE_FIELDS = [
    pa.field("duplicate_of", pa.string()),  # "<source>/<id>" of the kept document
    pa.field("similarity", pa.float64()),
]

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("file", pa.string(), nullable=False),
        pa.field("line", pa.int64()),
        pa.field("id", pa.string()),
        pa.field("text", pa.large_string()),
        pa.field("raw", pa.large_binary()),  # the undecoded input, so nothing is lost
        *REASON_FIELDS,
    ]
)


def extend(schema: pa.Schema, fields: list[pa.Field]) -> pa.Schema:
    """The input schema with a stage's new columns appended (replacing same-named ones)."""
    names = {f.name for f in fields}
    kept = [f for f in schema if f.name not in names]
    return pa.schema(kept + list(fields)).remove_metadata()


def with_reasons(schema: pa.Schema, extra: list[pa.Field] | None = None) -> pa.Schema:
    return extend(schema, REASON_FIELDS + list(extra or []))
