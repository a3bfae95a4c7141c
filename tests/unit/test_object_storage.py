"""Ingest's parts on an object store: a real S3 API (moto's standalone server on loopback), reached
through pyarrow.fs with a storage root URI.

The output equals a local sequential ingest row for row; readers read only the parts the manifest
lists (written last: the commit point where rename is not atomic); a rerun replaces the parts and
deletes the old ones; the same rows give the same version. ``file://`` roots are local storage.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.engine.tasks import InProcessTasks
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel.ingest import ingest_with_reader
from refinery.kernel.ingest_tasks import ingest_in_tasks
from refinery.object_storage import ObjectStorage, open_storage
from refinery.storage import Storage
from tests.s3_server import s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name


def inbox(folder: Path, extra: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    records = [{"id": f"d{i % 13}", "text": f"text {i % 9} " * 3} for i in range(30 + extra)]
    body = b"".join(json.dumps(r).encode() + b"\n" for r in records)
    (folder / "a.jsonl").write_bytes(body[:200] + b"{not json\n" + body[200:])
    (folder / "b.parquet").write_bytes(b"PAR1 broken")
    return folder


def ingest(folder: Path, storage, params: IngestParams):
    reader = SourceReader(folder, "src", params)
    return ingest_in_tasks(reader, storage, "raw", {"v": 1}, InProcessTasks(), 2, params.split_bytes, params)


def test_ingest_parts_on_s3_equal_the_local_reading_and_commit_by_manifest(tmp_path, s3_root):
    folder = inbox(tmp_path / "inbox" / "src")
    params = IngestParams(split_bytes=400)
    local = Storage(tmp_path / "local")
    ingest_with_reader(SourceReader(folder, "src", params), local, "raw", {"v": 1})
    store = open_storage(s3_root)
    assert isinstance(store, ObjectStorage)
    run = ingest(folder, store, params)
    assert run.extra["engine"]["ranges"] > 2
    for rejected in (False, True):
        pd.testing.assert_frame_equal(
            store.read("raw", "src", rejected=rejected), local.read("raw", "src", rejected=rejected)
        )
    assert store.partitions("raw") == ["src"] and store.row_count("raw", "src") == local.row_count(
        "raw", "src"
    )
    assert store.provenance("raw", "src") == {"v": 1}
    batches = pd.concat(list(store.iter_batches("raw", "src", batch_rows=4)), ignore_index=True)
    pd.testing.assert_frame_equal(batches, local.read("raw", "src"))
    first = store.manifest("raw", "src")
    # A part no manifest lists (a run in progress, or one that died) is not read.
    stray = f"{store.parts_path('raw', 'src')}/part-00000-otherrun.parquet"
    pq.write_table(pa.table({"id": ["ghost"]}), stray, filesystem=store.fs)
    assert "ghost" not in store.read("raw", "src")["id"].tolist()
    # The same rows again: the same version; the old run's parts and the stray are gone.
    ingest(folder, store, params)
    assert store.manifest("raw", "src")["version"] == first["version"]
    names = {i.base_name for i in store.fs.get_file_info(_selector(store.parts_path("raw", "src")))}
    assert names == {p["name"] for p in store.manifest("raw", "src")["parts"]} | {"_manifest.json"}
    # Changed input: a new version, the new rows.
    inbox(folder, extra=5)
    ingest(folder, store, params)
    assert store.manifest("raw", "src")["version"] != first["version"]
    assert store.row_count("raw", "src", rejected=True) == local.row_count("raw", "src", rejected=True) + 5


def test_a_file_uri_root_is_local_storage(tmp_path):
    folder = inbox(tmp_path / "inbox" / "src")
    params = IngestParams(split_bytes=256)
    storage = open_storage(f"file://{tmp_path / 'store'}")
    assert isinstance(storage, Storage) and storage.root == tmp_path / "store"
    ingest(folder, storage, params)
    assert storage.files("raw", "src")[0].parent == tmp_path / "store" / "raw" / "src"


def _selector(folder: str):
    import pyarrow.fs as pafs

    return pafs.FileSelector(folder)


def test_a_single_process_writer_on_s3_commits_by_manifest_and_aborts_cleanly(s3_root):
    from refinery.object_storage import ObjectPartitionWriter

    store = open_storage(s3_root)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    rejected_schema = schema.append(pa.field("reason", pa.string()))
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(40)], "text": [f"text {i} " * 20 for i in range(40)]})
    reasons = frame.head(3).assign(reason="too_short")
    # Parts roll past part_bytes: several parts, read back in order.
    with ObjectPartitionWriter(
        store, "clean", "w", schema, rejected_schema, {"v": 1}, part_bytes=1
    ) as writer:
        for start in range(0, 40, 10):
            writer.write(frame.iloc[start : start + 10], reasons if start == 0 else None)
    assert writer.path.startswith("s3://") and (writer.rows_out, writer.rows_rejected) == (40, 3)
    assert len(store.manifest("clean", "w")["parts"]) == 4 and store.row_count("clean", "w") == 40
    pd.testing.assert_frame_equal(store.read("clean", "w"), frame)
    pd.testing.assert_frame_equal(store.read("clean", "w", rejected=True), reasons.reset_index(drop=True))
    assert store.provenance("clean", "w") == {"v": 1}
    version = store.manifest("clean", "w")["version"]

    # A run that fails mid-write: nothing of it is visible and its parts are gone; the old output stays.
    with (
        pytest.raises(RuntimeError, match="killed"),
        store.writer("clean", "w", schema, rejected_schema, {"v": 2}) as failing,
    ):
        failing.write(frame.head(5))
        raise RuntimeError("killed")
    assert store.manifest("clean", "w")["version"] == version
    names = {i.base_name for i in store.fs.get_file_info(_selector(store.parts_path("clean", "w")))}
    assert names == {p["name"] for p in store.manifest("clean", "w")["parts"]} | {"_manifest.json"}

    # No rows: one empty part that carries the schema.
    with store.writer("clean", "empty", schema, rejected_schema, {"v": 1}):
        pass
    assert store.row_count("clean", "empty") == 0 and store.schema("clean", "empty").names == schema.names
    assert store.read("clean", "empty").empty and store.partitions("clean") == ["empty", "w"]
    with pytest.raises(NotImplementedError, match="needs a local storage root"):
        store.path("clip_embeddings", "w")  # a side table written through a local path


def test_a_catalog_file_refuses_an_object_store_root(tmp_path, s3_root):
    from refinery.sql import write_catalog

    with pytest.raises(ValueError, match=r"refinery\.sql\.connect"):
        write_catalog(s3_root, tmp_path / "catalog.duckdb")
