"""JSON Lines admitted a block at a time (refinery.ingest.jsonl_blocks): the same rows, reasons and
ids as the line-by-line path, whatever the lines hold."""

from __future__ import annotations

import gzip
import json
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from refinery.ingest.jsonl_blocks import parse_block
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.collector import FilePiece
from refinery.kernel.ingest import ingest_with_reader
from refinery.storage import Storage

CLEAN = [b'{"id": "a", "text": "one two"}\n', b'{"id": "b", "text": "x\\u00e9\\ud83d\\ude00", "url": "u"}\n']


@pytest.mark.parametrize(
    "line",
    [
        b"\n",  # blank
        b'{"id": "c", "text": "x"} \n',  # trailing space: json.loads' call
        b'{"id": "c", "text": "x"}\r\n',
        b'{"id": "c", "text": "a\tb"}\n',  # a raw tab: json.loads rejects it
        b'{"id": "c", "text": "x"}{"id": "d", "text": "y"}\n',
        b'{"id": "c", "text": "x\xff"}\n',  # not UTF-8
        b'{"id": "c", "text": "\\ud83d"}\n',  # lone surrogates, each kind
        b'{"id": "c", "text": "\\ude00x"}\n',
        b'{"id": "c", "text": "\\ude00\\ud83d"}\n',
        b'{"id": "c", "text": "\\uD83D\\u0041"}\n',
        b'{"id": "c", "text": "x", "text": "y"}\n',  # duplicate key
        b'{"id": "c", "text": "x", "te\\u0078t": "y"}\n',
        b'{"id": 3, "text": "x"}\n',  # an int id is str()-ed by the line path
        b'{"id": " c", "text": "x"}\n',  # padded id: stripped by the line path
        b'{"id": "\\u3000", "text": "x"}\n',
        b'{"id": "", "text": "x"}\n',
        b'{"id": "c", "text": ""}\n',
        b'{"id": "c", "text": " \\u001c\\u2028\\u00a0"}\n',  # whitespace only (str.isspace)
        b'{"id": "c", "text": null}\n',
        b'{"id": "c", "text": 5}\n',
        b'{"id": "c", "text": "x", "meta": {"k": 1}}\n',
        b'{"id": "c", "text": "x", "url": 7}\n',
        b'["id", "text"]\n',
        b'{"id": "c", "text": "xxxxxxxxxxx"}\n',  # over max_document_chars=10
    ],
)
def test_a_block_with_any_line_the_line_path_must_judge_is_refused(line):
    assert parse_block([*CLEAN, line, CLEAN[0]], 10) is None
    assert parse_block([*CLEAN, line.rstrip(b"\n")], 10) is None  # as the file's last line too


def test_a_clean_block_gives_json_loads_strings():
    lines = [
        *CLEAN,
        b'{"text": "no id"}\n',
        b'{"url": null, "text": "\\u00a0tail\\\\u0041 ", "id": "q\\u00e9"}',
    ]
    parsed = parse_block(lines, 20)
    records = [json.loads(line) for line in lines]
    assert parsed.texts.to_pylist() == [r["text"] for r in records]
    assert parsed.ids.to_pylist() == [r.get("id") for r in records]  # None: derived from the text
    assert parsed.urls.to_pylist() == [r.get("url") for r in records]


BLOCK_ROWS = []  # rows the last readings admitted as Arrow blocks


def rows(reader: SourceReader, piece: FilePiece | None = None) -> tuple[list, list, dict]:
    """Kept rows (Arrow blocks and dicts, in order), quarantine rows and counts of a reading."""
    kept, rejected = [], []
    for batch in reader.batches() if piece is None else reader.read_piece(piece):
        if batch.table is not None:
            BLOCK_ROWS.append(batch.table.num_rows)
        kept += ([] if batch.table is None else batch.table.to_pylist()) + batch.documents
        rejected += batch.quarantine
    stats = reader.stats
    return kept, rejected, (dict(stats.files), stats.documents, dict(stats.reasons), stats.blank_lines)


def both_ways(folder: Path, params: IngestParams, piece: FilePiece | None = None):
    """The same reading by blocks and line by line."""
    readings = []
    for blocks in (True, False):
        reader = SourceReader(folder, "s", params)
        reader.arrow_blocks = blocks
        readings.append(rows(reader, piece))
    return readings


def mixed_lines(prefix: str) -> list[bytes]:
    good = [
        json.dumps({"id": f"{prefix}{i}", "text": f"doc {i} \u00e9\U0001f600"}).encode() + b"\n"
        for i in range(11)
    ]
    return [
        *good[:4],  # a clean block
        good[1],  # a block: an id seen before (duplicate_id), derived ids (the second one "-2")
        b'{"text": "same"}\n',
        good[4],
        b'{"id": null, "text": "same", "url": "u"}\n',
        good[4],  # a block: an id seen in the block before
        good[5],
        *good[6:8],  # a block with a bad line: read line by line
        b"not json\n",
        b"\n",
        *good[8:11],
        b'{"text": "derived"}',  # no final newline
    ]


def test_blocks_give_the_line_paths_rows_reasons_and_counts(tmp_path):
    folder = tmp_path / "s"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(b"".join(mixed_lines("a")))
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(b"".join(mixed_lines("b")))[:-30])  # cut short
    BLOCK_ROWS.clear()
    blocks, lines = both_ways(folder, IngestParams(batch_rows=4))
    assert blocks == lines
    assert BLOCK_ROWS == [4, 3, 3, 1, 3, 3]  # both files read partly as blocks
    kept, rejected, _ = blocks
    same = [r["id"] for r in kept if r["text"] == "same"]  # one source: later copies get -2, -3…
    assert same == [same[0], *(f"{same[0]}-{n}" for n in (2, 3, 4))]
    assert {r["reason"] for r in rejected} >= {"duplicate_id", "malformed_json", "corrupt_archive"}
    size = (folder / "a.jsonl").stat().st_size
    for start, end in ((0, size // 2), (size // 2, size)):  # byte ranges, as a cluster's tasks read them
        piece = FilePiece(0, "a.jsonl", size, start, end, first_line=1 if start == 0 else 7)
        assert (
            both_ways(folder, IngestParams(batch_rows=4), piece)[0]
            == both_ways(folder, IngestParams(batch_rows=4), piece)[1]
        )


def written(folder: Path, params: IngestParams, blocks: bool) -> tuple[list, list, int]:
    with tempfile.TemporaryDirectory() as tmp:
        reader = SourceReader(folder, "s", params)
        on_batch = None if blocks else (lambda frame: None)  # a frame consumer reads line by line
        run = ingest_with_reader(reader, Storage(Path(tmp)), "raw", {}, on_batch=on_batch)
        stats = run.stats
        counts = (stats.rows_out, stats.rows_rejected, stats.chars_out, stats.tokens_out, stats.sample_kept)
        return pq.read_table(run.path).to_pylist(), pq.read_table(run.rejected_path).to_pylist(), counts


TEXTS = st.sampled_from(["a b", " lead", "trail\n", "\u3000", "", "x\u00e9\U0001f600y", "\\ud800", "t\tab"])
ANY_RECORD = st.fixed_dictionaries(
    {"text": TEXTS | st.text(max_size=12) | st.none()},
    optional={"id": st.sampled_from(["a", "b", "c", " d", ""]) | st.integers(0, 3), "url": st.just("u")},
)
CLEAN_RECORD = st.fixed_dictionaries(  # most lines: the blocks are read as blocks, ids repeat
    {
        "id": st.sampled_from("abcdefghij") | st.none(),
        "text": st.one_of(*[st.text(min_size=1, max_size=8)] * 3, TEXTS),
    },
    optional={"url": st.just("u")},
)
RECORD = st.one_of(*[CLEAN_RECORD] * 8, ANY_RECORD)
JSON_LINE = st.builds(lambda r, ascii_: json.dumps(r, ensure_ascii=ascii_).encode(), RECORD, st.booleans())
BAD_LINE = (
    st.sampled_from(  # and control bytes: between tokens (a tab, a CR: valid JSON), in a string, in a key
        [
            b"",
            b"{",
            b'{"id": "k", "text": "\\udc80"}',
            b"\xff",
            b'{"id": "t",\t"text": "a"}',
            b'{"id": "r",\r"text": "a"}',
        ]
        + [b'{"id": "c", "text": "a%sb"}' % bytes([c]) for c in (0, 1, 9, 13, 31)]
        + [b'{"id": "k",\x0b"text": "a"}', b'{"id": "k", "te\x01xt": "a"}']
    )
)
LINE = st.one_of(*[JSON_LINE] * 10, BAD_LINE)


@settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lines=st.lists(LINE, max_size=14), batch_rows=st.sampled_from([2, 3, 5]))
def test_any_file_is_written_the_same_by_blocks_and_line_by_line(lines, batch_rows):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s"
        folder.mkdir()
        (folder / "f.jsonl").write_bytes(b"\n".join(lines))
        params = IngestParams(batch_rows=batch_rows, max_document_chars=8)
        assert repr(written(folder, params, True)) == repr(written(folder, params, False))  # NaN in samples
