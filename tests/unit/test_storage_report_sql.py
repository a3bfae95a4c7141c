"""Atomic partition files, inbox fingerprints, the corpus report and the SQL views."""

import os
import time

import pandas as pd
import pyarrow as pa
import pytest

from refinery.batch import BatchResult, split_batch
from refinery.inbox import scan
from refinery.kernel.runner import run_stage
from refinery.report import build_report
from refinery.schema import DOCUMENT_SCHEMA, with_reasons
from refinery.sql import connect, views, write_catalog
from refinery.stats import Histogram, StageStats
from refinery.storage import Storage
from tests.conftest import write_source


def docs(n, prefix="d"):
    return pd.DataFrame(
        {
            "id": [f"{prefix}{i}" for i in range(n)],
            "text": [f"text number {i}" for i in range(n)],
            "source": "s",
            "url": None,
            "meta": None,
            "file": "f",
            "line": list(range(1, n + 1)),
        }
    )


def write(storage, asset, frame, rejected=None):
    with storage.writer(asset, "s", DOCUMENT_SCHEMA, with_reasons(DOCUMENT_SCHEMA), {"asset": asset}) as w:
        w.write(frame, rejected)


def test_writer_is_atomic_and_leaves_old_files_on_failure(tmp_path):
    storage = Storage(tmp_path)
    write(storage, "a", docs(3))
    before = storage.path("a", "s").read_bytes()
    with (
        pytest.raises(RuntimeError),
        storage.writer("a", "s", DOCUMENT_SCHEMA, with_reasons(DOCUMENT_SCHEMA), {}) as w,
    ):
        w.write(docs(5))
        raise RuntimeError("stage crashed")
    assert storage.path("a", "s").read_bytes() == before
    assert [p.name for p in storage.path("a", "s").parent.iterdir()] == ["s.parquet"]  # no temp files left


def test_schema_is_enforced_and_provenance_recorded(tmp_path):
    storage = Storage(tmp_path)
    with pytest.raises(KeyError, match="lacks columns"):
        write(storage, "a", docs(2).drop(columns=["url"]))
    write(storage, "a", docs(2))
    assert storage.provenance("a", "s") == {"asset": "a"}
    assert storage.partitions("a") == ["s"] and storage.row_count("a", "s") == 2


def test_run_stage_streams_batches_and_accounts_rows(tmp_path):
    storage = Storage(tmp_path)
    write(storage, "up", docs(23))
    seen = []

    def every_third_rejected(batch: pd.DataFrame) -> BatchResult:
        seen.append(len(batch))
        reasons = [("odd", "i % 3 == 0") if int(i[1:]) % 3 == 0 else None for i in batch["id"]]
        return split_batch(batch.assign(score=range(len(batch))), reasons)

    run = run_stage(
        storage,
        "up",
        "down",
        "s",
        every_third_rejected,
        [pa.field("score", pa.int64())],
        {"asset": "down"},
        histograms={"score": Histogram([2, 4])},
        batch_rows=10,
    )
    assert seen == [10, 10, 3]
    assert (run.stats.rows_in, run.stats.rows_out, run.stats.rows_rejected) == (23, 15, 8)
    assert storage.row_count("down", "s") == 15 and storage.row_count("down", "s", rejected=True) == 8
    assert set(storage.read("down", "s", rejected=True)["reason"]) == {"odd"}
    assert run.stats.reasons == {"odd": 8} and run.stats.histograms["score"].counts.sum() == 15


def test_invalid_partition_names_are_refused(tmp_path):
    with pytest.raises(ValueError, match="not usable as a partition"):
        Storage(tmp_path).path("a", "../escape")


def test_scan_fingerprints_change_with_content_and_wait_for_quiet(home):
    folder = write_source(home, "news", {"a.jsonl": "{}\n"})
    past = time.time() - 100
    os.utime(folder / "a.jsonl", (past, past))
    first = scan(home, "text", settle_seconds=5).ready["news"]
    (folder / "a.jsonl").write_text("{}\n{}\n")
    assert scan(home, "text", settle_seconds=5).settling == ["news"]
    os.utime(folder / "a.jsonl", (past, past))
    assert scan(home, "text", settle_seconds=5).ready["news"].fingerprint != first.fingerprint


def test_report_and_sql_views(tmp_path):
    storage = Storage(tmp_path)
    write(
        storage, "raw_documents", docs(4), docs(1, "bad").assign(reason="malformed_json", reason_detail="x")
    )
    write(storage, "pretrain_corpus", docs(3))
    stats = StageStats()
    stats.rows_in, stats.rows_out, stats.rows_rejected = 5, 4, 1
    stats.reasons.update({"malformed_json": 1})
    storage.write_stats("raw_documents", "s", stats.summary())
    final = StageStats()
    final.rows_in = final.rows_out = 3
    final.observe_output(docs(3))
    storage.write_stats("pretrain_corpus", "s", final.summary())

    report = build_report(storage)
    assert report.sources == ["s"]
    totals = report.totals().set_index("stage")
    assert (
        totals.loc["pretrain_corpus", "tokens_out"] == 9 and totals.loc["raw_documents", "rows_rejected"] == 1
    )
    assert "malformed_json" in report.markdown() and report.lengths.counts.sum() == 3

    assert set(views(tmp_path)) == {
        "raw_documents",
        "pretrain_corpus",
        "rejected_raw_documents",
        "rejected_pretrain_corpus",
    }
    con = connect(tmp_path)
    assert con.execute(
        "SELECT count(*) FROM rejected_raw_documents WHERE reason = 'malformed_json'"
    ).fetchone() == (1,)
    catalog = tmp_path / "cat.duckdb"
    write_catalog(tmp_path, catalog)
    import duckdb

    assert duckdb.connect(str(catalog)).execute("SELECT count(*) FROM pretrain_corpus").fetchone() == (3,)


def test_sql_views_skip_staging_folders(tmp_path):
    """A failed attempt on workers keeps its staging folder for the retry (``.<source>.parts.retry-…
    .tmp``): its parts are not committed, and the views must not read them (DuckDB's ``*`` matches a
    leading dot). An asset with nothing but a staging folder has no view."""
    import pyarrow.parquet as pq

    for folder, rows in (
        ("raw_documents/s", 2),  # committed parts
        ("raw_documents/.s.parts.retry-0123.tmp", 5),  # the failed attempt's, kept for its retry
        ("raw_documents/.t.parts.retry-4567.tmp", 7),
        ("document_embeddings/.s.parts.retry-89ab.tmp", 1),
    ):
        (tmp_path / folder).mkdir(parents=True)
        table = pa.table({"id": [f"{folder}-{i}" for i in range(rows)], "text": ["x"] * rows})
        pq.write_table(table, tmp_path / folder / "part-00000.parquet")
    assert set(views(tmp_path)) == {"raw_documents"}
    assert connect(tmp_path).execute("SELECT count(*) FROM raw_documents").fetchone() == (2,)
    storage = Storage(tmp_path)
    assert storage.partitions("raw_documents") == ["s"] and storage.partitions("document_embeddings") == []
