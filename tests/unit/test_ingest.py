"""The text reader: every kind of bad input is quarantined with file, line and reason; none is lost."""

import codecs
import gzip
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.ids import content_id
from refinery.ingest.text_reader import IngestParams, SourceReader
from tests.conftest import write_source


def read_all(folder, source="s", **params):
    reader = SourceReader(folder, source, IngestParams(**params))
    docs, quarantine = [], []
    for batch in reader.batches():
        docs += batch.documents
        quarantine += batch.quarantine
    return docs, quarantine, reader.stats


def jsonl(*records) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in records)


def test_jsonl_fields_ids_and_meta(home):
    folder = write_source(
        home,
        "s",
        {
            "a.jsonl": jsonl(
                {
                    "id": "x1",
                    "text": "first doc",
                    "url": "https://a.example",
                    "meta": {"lang": "en"},
                    "score": 3,
                },
                {"text": "second doc"},
                {"id": 7, "text": "third doc", "meta": "plain"},
            )
        },
    )
    docs, quarantine, _ = read_all(folder)
    assert quarantine == []
    assert [d["id"] for d in docs] == ["x1", content_id("second doc"), "7"]
    assert json.loads(docs[0]["meta"]) == {"lang": "en", "score": 3}  # unmodelled fields kept in meta
    assert json.loads(docs[2]["meta"]) == "plain"
    assert [d["line"] for d in docs] == [1, 2, 3]
    assert {d["file"] for d in docs} == {"a.jsonl"} and docs[0]["url"] == "https://a.example"


def test_derived_ids_are_stable_and_unique(home):
    folder = write_source(
        home, "s", {"a.jsonl": jsonl({"text": "same"}, {"text": "same"}, {"text": "other"})}
    )
    first, _, _ = read_all(folder)
    again, _, _ = read_all(folder)
    assert [d["id"] for d in first] == [d["id"] for d in again]
    assert first[1]["id"] == first[0]["id"] + "-2"
    assert len({d["id"] for d in first}) == 3


BAD_LINES = [
    (b'{"text": "unterminated', "malformed_json"),
    (b"not json", "malformed_json"),
    ('{"text": "caf\xe9"}'.encode("latin-1"), "undecodable_bytes"),
    (b'{"title": "no text"}', "missing_text"),
    (b'{"text": null}', "text_not_string"),
    (b'{"text": 12}', "text_not_string"),
    (b'{"text": ""}', "empty_text"),
    (b'{"text": " \\n\\t "}', "empty_text"),
    (b"[1, 2]", "not_an_object"),
    (b'{"id": {"a": 1}, "text": "bad id type"}', "invalid_id"),
    (b'{"id": "  ", "text": "blank id"}', "invalid_id"),
]


@pytest.mark.parametrize(("line", "reason"), BAD_LINES)
def test_each_bad_line_is_quarantined_with_reason(home, line, reason):
    folder = write_source(
        home, "s", {"f.jsonl": jsonl({"text": "good before"}) + line + b"\n" + jsonl({"text": "good after"})}
    )
    docs, quarantine, stats = read_all(folder)
    assert [d["text"] for d in docs] == ["good before", "good after"]
    assert len(quarantine) == 1
    row = quarantine[0]
    assert (row["reason"], row["file"], row["line"], row["source"]) == (reason, "f.jsonl", 2, "s")
    assert row["raw"] == line  # the bytes survive
    assert row["reason_detail"]
    assert stats.documents + stats.quarantined == 3


def test_duplicate_explicit_id_keeps_first(home):
    folder = write_source(
        home, "s", {"f.jsonl": jsonl({"id": "a", "text": "one"}, {"id": "a", "text": "two"})}
    )
    docs, quarantine, _ = read_all(folder)
    assert [d["text"] for d in docs] == ["one"]
    assert quarantine[0]["reason"] == "duplicate_id" and quarantine[0]["text"] == "two"


def test_oversized_document_quarantined_with_text(home):
    folder = write_source(home, "s", {"f.jsonl": jsonl({"text": "x" * 50}, {"text": "ok"})})
    docs, quarantine, _ = read_all(folder, max_document_chars=20)
    assert [d["text"] for d in docs] == ["ok"]
    assert quarantine[0]["reason"] == "oversized" and quarantine[0]["text"] == "x" * 50


def test_gzip_bom_crlf_and_blank_lines(home):
    body = codecs.BOM_UTF8 + b'{"text": "alpha"}\r\n\r\n' + codecs.BOM_UTF8 + b'{"text": "beta"}\r\n'
    folder = write_source(home, "s", {"a.jsonl.gz": gzip.compress(body)})
    docs, quarantine, stats = read_all(folder)
    assert [d["text"] for d in docs] == ["alpha", "beta"] and quarantine == []
    assert stats.blank_lines == 1


def test_gzip_detected_by_content_not_name(home):
    folder = write_source(home, "s", {"named-plain.jsonl": gzip.compress(jsonl({"text": "zipped"}))})
    docs, _, _ = read_all(folder)
    assert [d["text"] for d in docs] == ["zipped"]


def test_truncated_gzip_keeps_what_was_read(home):
    blob = gzip.compress(jsonl(*[{"text": f"document number {i} " * 20} for i in range(200)]))
    folder = write_source(home, "s", {"cut.jsonl.gz": blob[: len(blob) // 2]})
    docs, quarantine, _ = read_all(folder)
    assert 0 < len(docs) < 200
    assert [q["reason"] for q in quarantine] == ["corrupt_archive"]
    assert quarantine[0]["line"] == len(docs) + 1


def test_text_files_in_utf8_bom_utf16_and_bad_encoding(home):
    folder = write_source(
        home,
        "s",
        {
            "plain.txt": "Plain UTF-8 text.",
            "bom.txt": codecs.BOM_UTF8 + b"With a BOM.",
            "wide.txt": "UTF-16 with BOM: Grüße.".encode("utf-16"),
            "latin.txt": "Äpfel in Latin-1".encode("latin-1"),
            "empty.txt": b"",
        },
    )
    docs, quarantine, _ = read_all(folder)
    assert sorted(d["text"] for d in docs) == ["Plain UTF-8 text.", "UTF-16 with BOM: Grüße.", "With a BOM."]
    reasons = {q["file"]: q["reason"] for q in quarantine}
    assert reasons == {"latin.txt": "undecodable_bytes", "empty.txt": "empty_text"}
    assert next(q for q in quarantine if q["file"] == "latin.txt")["raw"] == "Äpfel in Latin-1".encode(
        "latin-1"
    )


def test_utf16_jsonl(home):
    folder = write_source(
        home, "s", {"w.jsonl": '{"text": "wide one"}\n{"text": "wide two"}\n'.encode("utf-16")}
    )
    docs, quarantine, _ = read_all(folder)
    assert [d["text"] for d in docs] == ["wide one", "wide two"] and quarantine == []


def test_parquet_rows_and_bad_parquet(home):
    folder = write_source(home, "s", {"corrupt.parquet": b"PAR1 not really", "notes.csv": "a,b\n"})
    pq.write_table(
        pa.table({"text": ["p one", None, "p three"], "id": ["a", "b", None], "lang": ["en"] * 3}),
        folder / "good.parquet",
    )
    pq.write_table(pa.table({"body": ["no text column"]}), folder / "wrong.parquet")
    docs, quarantine, _ = read_all(folder)
    assert [(d["id"], d["text"], d["line"]) for d in docs] == [
        ("a", "p one", 1),
        (content_id("p three"), "p three", 3),
    ]
    assert json.loads(docs[0]["meta"]) == {"lang": "en"}
    reasons = sorted((q["file"], q["reason"]) for q in quarantine)
    assert reasons == [
        ("corrupt.parquet", "unreadable_parquet"),
        ("good.parquet", "text_not_string"),
        ("notes.csv", "unsupported_file_type"),
        ("wrong.parquet", "missing_text"),
    ]
    assert next(q for q in quarantine if q["file"] == "notes.csv")["raw"] == b"a,b\n"


def test_missing_or_empty_folder_yields_nothing(home):
    assert read_all(home.inbox_source("text", "absent"))[:2] == ([], [])
    folder = write_source(home, "s", {})
    folder.mkdir(parents=True, exist_ok=True)
    assert read_all(folder)[:2] == ([], [])


def test_hidden_files_ignored_and_order_stable(home):
    folder = write_source(
        home,
        "s",
        {"b.jsonl": jsonl({"text": "b"}), "a/x.jsonl": jsonl({"text": "a"}), ".partial.jsonl": b"garbage"},
    )
    docs, quarantine, _ = read_all(folder)
    assert [d["file"] for d in docs] == ["a/x.jsonl", "b.jsonl"] and quarantine == []


def test_batches_are_bounded(home):
    folder = write_source(home, "s", {"a.jsonl": jsonl(*[{"text": f"doc {i}"} for i in range(25)])})
    reader = SourceReader(folder, "s", IngestParams(batch_rows=10))
    sizes = [len(b.documents) for b in reader.batches()]
    assert sum(sizes) == 25 and max(sizes) <= 10
