"""Ingest as tasks (one per file or JSONL byte range) equals one sequential reading, row for row.

The tasks run in this process here (the Ray path is tested through Dagster in tests/ray); what is
checked is what the tasks must reconstruct from the whole source: line numbers of ranges, ids seen
earlier in the source (duplicates of input ids, derived ids' suffixes across files and ranges),
quarantine rows with their reasons, the counts the metadata shows and the manifest.
"""

from __future__ import annotations

import gzip
import json

import pandas as pd
import pytest

from refinery.engine.tasks import InProcessTasks
from refinery.ids import content_id
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.checks import invariant_checks
from refinery.kernel.ingest import ingest_with_reader
from refinery.kernel.ingest_tasks import ingest_in_tasks, plan_pieces
from refinery.manifest import read_manifest
from refinery.sft.reader import SftIngestParams, SftReader
from refinery.storage import Storage


def lines(*records) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in records)


def text_source(folder):
    folder.mkdir(parents=True)
    big = [{"text": f"document number {i} " + "word " * (i % 7)} for i in range(40)]
    big[3] = {"text": "same text everywhere"}
    big[9] = {"id": "x1", "text": "explicit one"}
    big[25] = {"id": "x1", "text": "explicit again"}  # a duplicate input id, in a later range
    big[30] = {"text": "same text everywhere"}  # a derived id's second use: -2
    big[31] = {"id": content_id("same text everywhere") + "-3", "text": "an input id shaped like a suffix"}
    big[33] = {"text": "same text everywhere"}  # -3 is taken by the input id above: -4
    records = [
        *big[:20],
        b'{"text": "broken json that is long enough to cross a range boundary"',
        b"",
        *big[20:],
    ]
    (folder / "a.jsonl").write_bytes(lines(*records))
    (folder / "b.jsonl.gz").write_bytes(
        gzip.compress(lines({"text": "same text everywhere"}, {"id": "x1", "text": "z"}))
    )
    (folder / "c.parquet").write_bytes(b"PAR1 not really parquet")  # unreadable: quarantined whole
    (folder / "d.txt").write_text("same text everywhere")
    (folder / "e.csv").write_text("a,b\n")
    (folder / "g.jsonl").symlink_to("/proc/self/mem")  # a file that cannot be read (EIO), even by root
    (folder / "f.jsonl").write_bytes(b'\xef\xbb\xbf{"text": "bom"}\r\n{"text": 5}\r\n\xff\xfe bad\r\n')


def run_both(folder, tmp_path, reader_cls, params, asset="raw"):
    local = Storage(tmp_path / "local")
    seq_reader = reader_cls(folder, "s", params)
    seq = ingest_with_reader(seq_reader, local, asset, {"p": 1})
    tasks = Storage(tmp_path / "tasks")
    task_reader = reader_cls(folder, "s", params)
    run = ingest_in_tasks(
        task_reader, tasks, asset, {"p": 1}, InProcessTasks(), 2, params.split_bytes, params
    )
    for rejected in (False, True):
        a, b = local.read(asset, "s", rejected=rejected), tasks.read(asset, "s", rejected=rejected)
        pd.testing.assert_frame_equal(a, b)
    assert run.stats.summary() == seq.stats.summary()
    assert run.stats.extra == seq.stats.extra
    assert task_reader.report() == seq_reader.report() and task_reader.summary() == seq_reader.summary()
    checks = invariant_checks(run, run.stats.rows_in, reader_cls.TEXT_COLUMN)  # as execute_ingest does
    assert [c.passed for c in checks] == [
        c.passed for c in invariant_checks(seq, seq.stats.rows_in, reader_cls.TEXT_COLUMN)
    ]
    assert all(c.passed for c in checks)
    return local, tasks, run


def test_ranges_and_files_equal_one_sequential_reading(tmp_path):
    folder = tmp_path / "inbox" / "s"
    text_source(folder)
    params = IngestParams(split_bytes=300, batch_rows=7)
    pieces = plan_pieces(SourceReader(folder, "s", params), params.split_bytes)
    assert sum(p.path == "a.jsonl" for p in pieces) > 5  # the big file is cut in ranges
    _, tasks, run = run_both(folder, tmp_path, SourceReader, params)
    docs = tasks.read("raw", "s")
    base = content_id("same text everywhere")
    same = docs[docs["text"] == "same text everywhere"]
    assert same["id"].tolist() == [base, f"{base}-2", f"{base}-4", f"{base}-5", f"{base}-6"]
    rejected = tasks.read("raw", "s", rejected=True)
    reasons = dict(zip(rejected["reason"], rejected["line"], strict=False))
    assert reasons["malformed_json"] == 21 and "unreadable_parquet" in reasons
    unreadable = rejected[rejected["reason"] == "unreadable_file"]
    assert (
        unreadable["file"].tolist() == ["g.jsonl"]
        and "Input/output error" in unreadable["reason_detail"].iloc[0]
    )
    assert rejected["reason"].tolist().count("duplicate_id") == 2  # x1 again in a.jsonl, then in b.jsonl.gz
    engine = run.extra["engine"]
    assert engine["pieces_reread"] >= 1 and engine["ids_fixed"] >= 3
    manifest = read_manifest(tasks.parts_path("raw", "s"))
    assert manifest["rows"] == len(docs) and len(manifest["parts"]) == len(pieces)


@pytest.mark.parametrize("split", [1, 17, 10_000])
def test_any_range_size_gives_the_same_rows(tmp_path, split):
    folder = tmp_path / "inbox" / "s"
    folder.mkdir(parents=True)
    records = [{"text": f"t{i % 5}"} if i % 4 else b"" for i in range(14)] + [b"{broken"]
    (folder / "a.jsonl").write_bytes(lines(*records)[:-1])  # no newline at the end
    run_both(folder, tmp_path, SourceReader, IngestParams(split_bytes=split))


@pytest.mark.parametrize("files", [None, {}])
def test_an_empty_or_missing_folder_is_an_empty_partition(tmp_path, files):
    folder = tmp_path / "inbox" / "s"
    if files is not None:
        folder.mkdir(parents=True)
    _, tasks, run = run_both(folder, tmp_path, SourceReader, IngestParams())
    assert run.stats.extra["folder_exists"] is (files is not None)
    assert tasks.row_count("raw", "s") == 0 and tasks.exists("raw", "s")


def test_sft_records_in_ranges(tmp_path):
    folder = tmp_path / "inbox" / "s"
    folder.mkdir(parents=True)
    chat = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    records = [
        {"instruction": f"Say {i % 3}.", "output": "ok"} if i % 5 else {"id": "k", "messages": chat}
        for i in range(25)
    ]
    (folder / "a.jsonl").write_bytes(lines(*records, b"[1, 2]"))
    (folder / "b.json").write_text(json.dumps([{"prompt": "Say 1.", "completion": "ok"}]))
    _, tasks, _ = run_both(folder, tmp_path, SftReader, SftIngestParams(split_bytes=200), "raw_sft")
    assert tasks.read("raw_sft", "s", rejected=True)["reason"].tolist().count("duplicate_id") == 4


def test_few_files_per_worker_are_cut_finer_and_keep_the_order(tmp_path, monkeypatch):
    """With fewer files than PIECES_PER_WORKER per worker, JSONL files are read as smaller ranges
    (down to MIN_RANGE_BYTES, shrunk here to fit a small test file), and the parts still read in
    the order of one sequential reading."""
    from refinery.kernel import ingest_tasks

    folder = tmp_path / "inbox" / "s"
    text_source(folder)
    params = IngestParams(batch_rows=7)  # the default split_bytes (256 MiB): no file is that large
    assert (
        sum(
            p.path == "a.jsonl" for p in plan_pieces(SourceReader(folder, "s", params), params.split_bytes, 2)
        )
        == 1
    )
    monkeypatch.setattr(ingest_tasks, "MIN_RANGE_BYTES", 200)
    pieces = plan_pieces(SourceReader(folder, "s", params), params.split_bytes, 2)
    ranges = [p for p in pieces if p.path == "a.jsonl"]
    assert len(ranges) > 5 and [p.start for p in ranges] == sorted(p.start for p in ranges)
    sizes = [p.end - p.start for p in ranges]  # equal ranges: no sliver at the file's end
    assert max(sizes) - min(sizes) <= 1 and ranges[-1].end == ranges[-1].size
    assert ingest_tasks.range_bytes([100, 100], 0, 8) == 0  # 0: never split, whatever the workers
    assert ingest_tasks.range_bytes([10**9] * 16, 256 << 20, 2) == 256 << 20  # enough files: as asked
    _, tasks, run = run_both(folder, tmp_path, SourceReader, params)
    assert run.extra["engine"]["ranges"] == len(ranges)
    assert tasks.read("raw", "s")["id"].is_unique
