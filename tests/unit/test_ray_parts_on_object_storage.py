"""What the Ray engine's workers do on an object store root, without a cluster: moto's S3 server on
loopback, the writer and storage pickled as they are sent to a worker.

- slices planned from the upstream's manifest and read through the root's URI;
- each slice's two parts written in place under the attempt's name, then its done marker (an
  object); nothing is visible to a reader before the driver's commit (the manifests);
- a second attempt with the same fingerprint finds the completed slices (a marker whose parts are
  missing or changed does not count) and the commit deletes every part no manifest lists;
- pass-one parts (scratch) under the root: markers, reuse, removal.
"""

from __future__ import annotations

import math
import pickle

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pytest

from refinery.batch import split_batch
from refinery.engine.object_parts import ObjectResumableParts
from refinery.engine.resume import data_version, read_marker, remove_scratch, scratch_folder
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import plan_slices, process_slice, slice_location, write_column_part
from refinery.kernel.processor import as_processor
from refinery.object_storage import ObjectStorage
from refinery.quality.perplexity import SCORE_PART_SCHEMA, ScoreParts
from refinery.storage import table_from_frame
from tests.s3_server import s3_credentials, s3_root

s3 = (s3_root, s3_credentials)  # fixtures, used by name
SCHEMA = pa.schema([("id", pa.string()), ("text", pa.string())])
REJECTED = SCHEMA.append(pa.field("reason", pa.string())).append(pa.field("reason_detail", pa.string()))


def upstream(store: ObjectStorage, rows: int = 20) -> pd.DataFrame:
    """An upstream partition on S3 in row groups of three rows (seven slices of three)."""
    frame = pd.DataFrame(
        {"id": [f"d{i:02d}" for i in range(rows)], "text": [f"t{i} " * (i % 4) for i in range(rows)]}
    )
    writer = store.writer("raw", "src", SCHEMA, REJECTED, {"v": 1})
    with writer:
        for lo in range(0, rows, 3):
            writer.write(frame.iloc[lo : lo + 3], pd.DataFrame(columns=REJECTED.names))
    return frame


def keep_non_empty(frame: pd.DataFrame):
    reasons = [None if t.strip() else ("empty", "no words") for t in frame["text"]]
    return split_batch(frame, reasons)


def run_slices(writer: ObjectResumableParts, slices, indexes) -> None:
    """What a worker does for each slice it is given (the writer arrives pickled)."""
    worker = pickle.loads(pickle.dumps(writer))
    process = as_processor(keep_non_empty)
    for piece in slices:
        if piece.index in indexes:
            stats = process_slice(
                pickle.loads(pickle.dumps(piece)), process, worker, SCHEMA, REJECTED, {}, "text", 2
            )
            worker.mark_done(piece.index, {"rows": stats.rows_out})


def listed_and_found(store: ObjectStorage, asset: str) -> tuple[set, set]:
    folder = store.parts_path(asset, "src")
    manifest = store.manifest(asset, "src")
    found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder, allow_not_found=True))}
    return ({p["name"] for p in manifest["parts"]} if manifest else set()), found


def test_slices_written_in_place_resume_and_commit_by_manifest(s3_root):
    store = ObjectStorage(s3_root)
    frame = upstream(store)
    assert pickle.loads(pickle.dumps(store)).read("raw", "src").equals(store.read("raw", "src"))
    location = slice_location(store, "raw", "src")
    assert location.startswith("s3://") and "endpoint_override=" in location  # what a worker opens
    slices = plan_slices(location, 3)
    assert len(slices) == 7 and sum(s.rows for s in slices) == len(frame)
    assert data_version(location) == store.manifest("raw", "src")["version"]

    first = ObjectResumableParts(s3_root, "clean", "src", "k1", {"v": 2})
    run_slices(first, slices, {0, 1, 2, 3})  # the attempt dies after four slices
    assert store.location("clean", "src") is None  # a reader sees nothing: no manifest
    assert listed_and_found(store, "clean")[1]  # though the parts are there, under the attempt's name

    retry = ObjectResumableParts(s3_root, "clean", "src", "k1", {"v": 2})
    assert [retry.done(s.index) is not None for s in slices] == [True] * 4 + [False] * 3
    store.fs.delete_file(retry.target.part_path(3, rejected=True))  # a part lost: its slice is redone
    assert retry.done(3) is None
    with pytest.raises(RuntimeError, match="parts were written; nothing committed"):
        retry.commit(len(slices))
    assert store.location("clean", "src") is None
    run_slices(retry, slices, {s.index for s in slices if retry.done(s.index) is None})
    folder, rejected = retry.commit(len(slices))
    assert folder.startswith("s3://") and rejected.startswith("s3://")

    kept = frame[frame["text"].str.strip() != ""].reset_index(drop=True)
    pd.testing.assert_frame_equal(store.read("clean", "src"), kept)
    assert (store.read("clean", "src", rejected=True)["reason"] == "empty").sum() == len(frame) - len(kept)
    listed, found = listed_and_found(store, "clean")
    assert found == listed | {"_manifest.json"} and len(listed) == 7
    assert not retry.markers().names()  # the markers went with the commit

    # A changed input (another fingerprint) sweeps the old markers; its attempt, aborted, leaves the
    # committed output as it was.
    stale = ObjectResumableParts(s3_root, "clean", "src", "k2", {"v": 3})
    run_slices(stale, slices, {0})
    stale.abort()
    assert listed_and_found(store, "clean") == (listed, found)
    pd.testing.assert_frame_equal(store.read("clean", "src"), kept)


def test_pass_one_parts_under_an_object_store_root(s3_root):
    store = ObjectStorage(s3_root)
    upstream(store, rows=9)
    slices = plan_slices(slice_location(store, "raw", "src"), 3)
    old = scratch_folder(store, "fuzzy", "src", "keys", "old")
    RootFolder(old).write_bytes("x", b"1")
    folder = scratch_folder(store, "fuzzy", "src", "keys", "new")  # another fingerprint's folder goes
    assert isinstance(folder, str) and not RootFolder(old).names()

    def lengths(frame: pd.DataFrame) -> pa.Table:
        return pa.table({"n": [len(t) for t in frame["text"]]})

    done = [
        write_column_part(p, lengths, ["text"], folder, 2, summarize=lambda t: t.num_rows) for p in slices
    ]
    assert [d["summary"] for d in done] == [3, 3, 3] and not any(d["reused"] for d in done)
    again = write_column_part(slices[1], lengths, ["text"], folder, 2)
    assert again["reused"] and read_marker(folder, 1)["rows"] == 3
    assert RootFolder(folder).read_table("part-00001.parquet").num_rows == 3
    # perplexity's second pass reads its first pass's score parts back from such a folder (a URI)
    scores = pa.table(
        {"id": ["a", "b"], "perplexity": [12.5, None], "perplexity_tokens": [3, 0],
         "paragraph_perplexity": [[12.5], []]},
        schema=SCORE_PART_SCHEMA,
    )  # fmt: skip
    RootFolder(folder).write_table("part-00002.parquet", scores)
    read = ScoreParts(folder, current=lambda: 2).read(2)
    assert len(read) == 2 and read.perplexity[0] == 12.5 and math.isnan(read.perplexity[1])
    assert list(read.tokens) == [3, 0]
    remove_scratch(folder)
    assert not RootFolder(folder).names()


def test_a_local_root_folder_writes_atomically(tmp_path):
    folder = RootFolder(str(tmp_path / "a" / "b"))
    folder.write_table(
        "part-00000.parquet", table_from_frame(pd.DataFrame({"id": ["x"], "text": ["y"]}), SCHEMA)
    )
    folder.write_bytes(".m", b"z")
    assert folder.names() == [".m", "part-00000.parquet"] and folder.read_bytes(".m") == b"z"
    assert folder.read_bytes("missing") is None
    folder.remove()
    assert not (tmp_path / "a" / "b").exists()
