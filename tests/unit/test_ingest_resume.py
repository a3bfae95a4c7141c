"""A retried ingest reads only the pieces an earlier attempt did not finish, and its output equals a
clean run's, whichever phase the first attempt failed in: reading, the id buckets, the id fixes,
or a fix that died between rewriting its part and its marker. A changed inbox starts clean.

The tasks run in this process (:class:`InProcessTasks`) and fail where the test says, with the
exception a lost connection raises; the same retry on Ray, through Dagster, on both storage roots,
is tests/ray/test_ingest_resume_on_ray.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import pandas as pd
import pyarrow.fs as pafs
import pytest

from refinery.engine.tasks import InProcessTasks
from refinery.ingest.text_reader import IngestParams, SourceReader
from refinery.kernel import ingest_tasks
from refinery.kernel.ingest_tasks import ingest_in_tasks
from refinery.manifest import read_manifest
from refinery.object_storage import ObjectStorage
from refinery.storage import Storage
from tests.s3_server import s3_credentials, s3_root, scratch_leftovers
from tests.unit.test_ingest_tasks import text_source

s3 = (s3_root, s3_credentials)  # fixtures, used by name
PARAMS = IngestParams(split_bytes=300, batch_rows=7)


@dataclass
class FailingTasks(InProcessTasks):
    """Runs every task here, but raises ConnectionError in place of the ``after``-th task of ``fail``
    (counted from 0); records which pieces each task function was called for."""

    fail: str = ""
    after: int = 0
    calls: dict[str, list] = field(default_factory=dict)

    def map(self, fn, args):
        out = []
        for a in args:
            name = fn.__name__
            if name == self.fail:
                if self.after == 0:
                    self.fail = ""
                    raise ConnectionError(f"injected: the store went away in {name}")
                self.after -= 1
            piece = a[1] if len(a) > 1 else None
            self.calls.setdefault(name, []).append(getattr(piece, "index", piece))  # a piece's index
            out.append(fn(*a))
        return out


def ingest(folder, storage: Storage | ObjectStorage, runner) -> ingest_tasks.StageRun:
    reader = SourceReader(folder, "s", PARAMS)
    return ingest_in_tasks(reader, storage, "raw", {"p": 1}, runner, 2, PARAMS.split_bytes, PARAMS)


def read_all(storage: Storage) -> tuple[pd.DataFrame, pd.DataFrame, dict, dict]:
    return (
        storage.read("raw", "s"),
        storage.read("raw", "s", rejected=True),
        read_manifest(storage.parts_path("raw", "s")),
        read_manifest(storage.parts_path("raw", "s", rejected=True)),
    )


def leftovers(storage: Storage) -> list[str]:
    """Hidden staging or scratch entries left beside the committed outputs."""
    return sorted(str(p.relative_to(storage.root)) for p in storage.root.rglob(".*") if p.name != ".stats")


@pytest.fixture
def clean(tmp_path):
    folder = tmp_path / "inbox" / "s"
    text_source(folder)
    storage = Storage(tmp_path / "clean")
    run = ingest(folder, storage, InProcessTasks())
    engine = run.extra["engine"]
    assert engine["tasks"] > 8 and engine["pieces_reread"] >= 1 and engine["ids_fixed"] >= 3  # both fixes
    return folder, read_all(storage), run


def assert_same(storage: Storage, clean_outputs, run, clean_run) -> None:
    got = read_all(storage)
    for a, b in zip(got[:2], clean_outputs[:2], strict=True):
        pd.testing.assert_frame_equal(a, b)
    assert got[2:] == clean_outputs[2:]  # the manifests: parts, rows, bytes, provenance, version
    assert run.stats.summary() == clean_run.stats.summary() and run.stats.extra == clean_run.stats.extra
    assert leftovers(storage) == []


@pytest.mark.parametrize("phase", ["read_piece", "resolve_bucket", "fix_piece"])
def test_a_retry_resumes_from_the_phase_that_failed(tmp_path, clean, phase):
    folder, outputs, clean_run = clean
    storage = Storage(tmp_path / "retried")
    first = FailingTasks(fail=phase, after=3 if phase == "read_piece" else 1)
    with pytest.raises(ConnectionError):
        ingest(folder, storage, first)
    assert not storage.exists("raw", "s")  # nothing committed
    retry = FailingTasks()
    run = ingest(folder, storage, retry)
    engine = run.extra["engine"]
    total = engine["tasks"]
    read_before = set(first.calls["read_piece"])
    read_now = set(retry.calls.get("read_piece", []))
    assert len(read_now) == total - len(read_before) and not read_before & read_now  # the rest only
    assert "count_lines" not in retry.calls  # the ranges are not counted again: the plan is kept
    assert engine["pieces_read"] == len(read_now) and engine["pieces_resumed"] == len(read_before)
    assert engine["plan_resumed"]
    if phase == "fix_piece":  # the one fix that completed is not applied again
        assert engine["fixes_resumed"] == 1
        assert not set(first.calls["fix_piece"]) & set(retry.calls["fix_piece"])
    assert_same(storage, outputs, run, clean_run)


@pytest.mark.parametrize("kind", ["rewritten", "reread"])
def test_a_fix_that_died_before_its_marker_is_redone(tmp_path, clean, monkeypatch, kind):
    """The fix rewrote its part (or reread its piece), then its task died: the marker still names the
    first reading's sizes, so the piece is read again and fixed again."""
    folder, outputs, clean_run = clean
    storage = Storage(tmp_path / "retried")
    mark = ingest_tasks.mark_piece
    died: list[int] = []

    def dying(job, target, piece, result, fixed):
        if fixed and not died and bool(result.get("reread")) == (kind == "reread"):
            died.append(piece.index)
            raise ConnectionError("injected: the worker died after the fix, before its marker")
        mark(job, target, piece, result, fixed)

    monkeypatch.setattr(ingest_tasks, "mark_piece", dying)
    with pytest.raises(ConnectionError):
        ingest(folder, storage, FailingTasks())
    monkeypatch.setattr(ingest_tasks, "mark_piece", mark)
    retry = FailingTasks()
    run = ingest(folder, storage, retry)
    assert died and died[0] in retry.calls["read_piece"]  # read again, then fixed again
    assert died[0] in retry.calls["fix_piece"]
    assert_same(storage, outputs, run, clean_run)


def test_a_changed_inbox_starts_clean(tmp_path, clean):
    folder, _, _ = clean
    storage = Storage(tmp_path / "retried")
    with pytest.raises(ConnectionError):
        ingest(folder, storage, FailingTasks(fail="read_piece", after=3))
    stale = leftovers(storage)
    assert stale  # the failed attempt's staging and scratch folders, kept for a retry
    with open(folder / "d.txt", "a") as handle:  # the source changes before the retry
        handle.write(" and a new ending")
    stat = (folder / "d.txt").stat()
    os.utime(folder / "d.txt", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    retry = FailingTasks()
    run = ingest(folder, storage, retry)
    engine = run.extra["engine"]
    assert len(retry.calls["read_piece"]) == engine["tasks"] and "count_lines" in retry.calls
    assert engine["pieces_resumed"] == 0 and not engine["plan_resumed"]
    fresh = Storage(tmp_path / "fresh")
    fresh_run = ingest(folder, fresh, InProcessTasks())
    assert_same(storage, read_all(fresh), run, fresh_run)  # no stale folder left, either


def test_an_ingest_run_again_after_its_commit_reads_everything(tmp_path, clean):
    """The markers go with the commit: running the step again over the same input reads it all
    (and gives the same output), it does not take the committed run's pieces for done."""
    folder, outputs, clean_run = clean
    storage = Storage(tmp_path / "again")
    ingest(folder, storage, InProcessTasks())
    again = FailingTasks()
    run = ingest(folder, storage, again)
    assert run.extra["engine"]["pieces_resumed"] == 0
    assert len(again.calls["read_piece"]) == run.extra["engine"]["tasks"]
    assert_same(storage, outputs, run, clean_run)


def test_on_an_object_store_a_retry_resumes_and_never_writes_over_the_committed_parts(
    tmp_path, clean, s3_root
):
    """On an object store the parts are written in place, under the attempt's token, and a fix rewrites
    a part after its first writing: a run over the same input after a commit takes another token
    (the committed part names are in its fingerprint), so a failed run leaves the committed output
    as it was, and its retry resumes."""
    folder, outputs, _ = clean
    head, _, query = s3_root.partition("?")
    store = ObjectStorage(f"{head}/resume-{tmp_path.name}?{query}")
    ingest(folder, store, InProcessTasks())
    committed = {r: store.manifest("raw", "s", r) for r in (False, True)}
    first = FailingTasks(fail="fix_piece", after=1)  # one part rewritten by its fix, then the failure
    with pytest.raises(ConnectionError):
        ingest(folder, store, first)
    assert {r: store.manifest("raw", "s", r) for r in (False, True)} == committed
    for rejected, want in ((False, outputs[0]), (True, outputs[1])):  # the committed rows, untouched
        pd.testing.assert_frame_equal(store.read("raw", "s", rejected=rejected), want)
        for part in committed[rejected]["parts"]:
            path = f"{store.parts_path('raw', 's', rejected)}/{part['name']}"
            assert store.fs.get_file_info(path).size == part["bytes"]
    retry = FailingTasks()
    run = ingest(folder, store, retry)
    assert (
        "read_piece" not in retry.calls
        and run.extra["engine"]["pieces_resumed"] == run.extra["engine"]["tasks"]
    )
    assert run.extra["engine"]["fixes_resumed"] == 1
    for rejected, want in ((False, outputs[0]), (True, outputs[1])):
        pd.testing.assert_frame_equal(store.read("raw", "s", rejected=rejected), want)
        assert store.manifest("raw", "s", rejected)["version"] == committed[rejected]["version"]
        listed = {p["name"] for p in store.manifest("raw", "s", rejected)["parts"]}
        assert listed.isdisjoint(p["name"] for p in committed[rejected]["parts"])  # another token
        found = {
            i.base_name
            for i in store.fs.get_file_info(pafs.FileSelector(store.parts_path("raw", "s", rejected)))
        }
        assert found == listed | {"_manifest.json"}  # the older run's parts are gone
    assert scratch_leftovers(store) == []


def test_on_an_object_store_a_changed_inbox_starts_clean(tmp_path, clean, s3_root):
    """The failed attempt's markers, keys and parts (under its token) go: its scratch folder when the
    next attempt starts, its parts with the next commit."""
    folder, _, _ = clean
    head, _, query = s3_root.partition("?")
    store = ObjectStorage(f"{head}/changed-{tmp_path.name}?{query}")
    with pytest.raises(ConnectionError):
        ingest(folder, store, FailingTasks(fail="read_piece", after=3))
    assert scratch_leftovers(store)  # kept for a retry
    (folder / "h.jsonl").write_text('{"text": "a file added before the retry"}\n')
    retry = FailingTasks()
    run = ingest(folder, store, retry)
    assert (
        run.extra["engine"]["pieces_resumed"] == 0
        and len(retry.calls["read_piece"]) == run.extra["engine"]["tasks"]
    )
    assert scratch_leftovers(store) == []
    fresh = Storage(tmp_path / "fresh")
    ingest(folder, fresh, InProcessTasks())
    for rejected in (False, True):
        pd.testing.assert_frame_equal(
            store.read("raw", "s", rejected=rejected), fresh.read("raw", "s", rejected=rejected)
        )
        listed = {p["name"] for p in store.manifest("raw", "s", rejected)["parts"]}
        found = {
            i.base_name
            for i in store.fs.get_file_info(pafs.FileSelector(store.parts_path("raw", "s", rejected)))
        }
        assert found == listed | {"_manifest.json"}
