"""A writer SIGKILLed in the middle leaves no partial output visible, and the next run succeeds
with the result of an uninterrupted one, its predecessor's temporaries swept away.

Each case starts the real write path in a subprocess, slowed down only so the test can kill it
while the temporary exists, kills it with SIGKILL, checks what a reader sees, then writes again.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from refinery.batch import split_batch
from refinery.kernel.runner import run_stage
from refinery.schema import DOCUMENT_SCHEMA
from refinery.storage import PartsWriter, Storage

ROOT = Path(__file__).resolve().parents[2]


def kill_when(script: str, appears: Path, pattern: str, timeout: float = 120) -> None:
    """Run ``script`` in a fresh Python; SIGKILL it once a file matching ``pattern`` is in ``appears``."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], env=env, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if appears.is_dir() and any(appears.glob(pattern)):
                time.sleep(0.3)  # well inside the write
                break
            if proc.poll() is not None:
                raise AssertionError(f"the writer ended (status {proc.returncode}) before it could be killed")
            time.sleep(0.05)
        else:
            raise AssertionError(f"nothing like {pattern} appeared in {appears}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith((".tmp", ".old"))]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def upstream(storage: Storage, rows: int = 400) -> None:
    texts = [f"document {i} " + "word " * (i % 17 + 3) for i in range(rows)]
    frame = pd.DataFrame(
        {"id": [f"d{i}" for i in range(rows)], "text": texts, "source": "s", "url": None, "meta": None,
         "file": "f", "line": range(1, rows + 1)}
    )  # fmt: skip
    with storage.writer("up", "s", DOCUMENT_SCHEMA, DOCUMENT_SCHEMA, {}) as writer:
        for start in range(0, rows, 20):  # many row groups, so the slow stage writes many batches
            writer.write(frame.iloc[start : start + 20], None)


def every_third(frame: pd.DataFrame):
    return split_batch(frame, [("odd", "") if int(i[1:]) % 3 == 0 else None for i in frame["id"]])


def run_every_third(storage: Storage):
    return run_stage(storage, "up", "out", "s", every_third, [], {"asset": "out"}, batch_rows=20)


STAGE_SCRIPT = """
    import time
    from refinery.storage import Storage
    from refinery.kernel.runner import run_stage
    from tests.unit.test_kill_mid_write import every_third

    def slow(frame):
        time.sleep(0.2)
        return every_third(frame)

    run_stage(Storage({root!r}), "up", "out", "s", slow, [], {{"asset": "out"}}, batch_rows=20)
"""


def test_stage_output_and_rejections_are_all_or_nothing(tmp_path):
    storage = Storage(tmp_path / "storage")
    upstream(storage)
    kill_when(STAGE_SCRIPT.format(root=str(storage.root)), storage.root / "out", ".s.parquet.*.tmp")
    assert not storage.exists("out", "s") and storage.location("out", "s", rejected=True) is None
    assert temporaries(storage.root)  # what the killed writer left
    run = run_every_third(storage)
    assert not temporaries(storage.root)
    reference = Storage(tmp_path / "reference")
    upstream(reference)
    run_every_third(reference)
    assert digest(run.path) == digest(reference.path("out", "s"))
    assert digest(run.rejected_path) == digest(reference.rejected_path("out", "s"))


def test_a_killed_rerun_leaves_the_previous_output_in_place(tmp_path):
    storage = Storage(tmp_path / "storage")
    upstream(storage)
    first = run_every_third(storage)
    before = digest(first.path), digest(first.rejected_path)
    kill_when(STAGE_SCRIPT.format(root=str(storage.root)), storage.root / "out", ".s.parquet.*.tmp")
    assert (digest(first.path), digest(first.rejected_path)) == before


PARTS_SCRIPT = """
    import time
    import pyarrow as pa
    from refinery.storage import PartsWriter, Storage

    writer = PartsWriter(Storage({root!r}), "out", "s")
    table = pa.table({{"id": ["a", "b"]}})
    for i in range(100):
        writer.write_part(i, table)
        writer.write_part(i, table, rejected=True)
        time.sleep(0.1)
    writer.commit(100)
"""


def test_parts_of_many_workers_are_committed_whole_or_not_at_all(tmp_path):
    storage = Storage(tmp_path / "storage")
    kill_when(PARTS_SCRIPT.format(root=str(storage.root)), storage.root / "out", ".s.parts.*.tmp")
    assert storage.location("out", "s") is None and temporaries(storage.root / "out")
    writer = PartsWriter(storage, "out", "s")  # a new run sweeps the dead run's staging
    assert not temporaries(storage.root / "out")
    table = pa.table({"id": ["a", "b"]})
    for i in range(3):
        writer.write_part(i, table)
        writer.write_part(i, table, rejected=True)
    writer.commit(3)
    assert storage.row_count("out", "s") == 6


SHARDS_SCRIPT = """
    import time
    from pathlib import Path
    import pyarrow.parquet as pq
    from refinery.schedule import shards
    from refinery.storage import Storage

    real = shards._write_split
    def slow(*args, **kwargs):
        time.sleep(60)  # the staging folder exists: the killer strikes here
        return real(*args, **kwargs)
    shards._write_split = slow
    manifest = pq.read_table({manifest!r})
    shards.write_shards(Storage({root!r}), manifest, Path({out!r}), 2, 4, 2, split_names=["train"])
"""


def test_schedule_shards_are_replaced_whole(tmp_path):
    from refinery.schedule.shards import write_shards

    storage = Storage(tmp_path / "storage")
    docs = pd.DataFrame({"id": [f"d{i}" for i in range(10)], "text": [f"text {i}" for i in range(10)]})
    docs = docs.assign(source="s", url=None, meta=None, file="f", line=range(10))
    with storage.writer("pretrain_corpus", "s", DOCUMENT_SCHEMA, DOCUMENT_SCHEMA, {}) as writer:
        writer.write(docs, None)
    manifest = pa.table(
        {"split": ["train"] * 10, "position": list(range(10)), "step": [i // 2 for i in range(10)],
         "phase": [0] * 10, "domain": ["s"] * 10, "source": ["s"] * 10, "id": docs["id"].tolist(),
         "epoch": [0] * 10, "replay": [False] * 10}
    )  # fmt: skip
    manifest_path = tmp_path / "manifest.parquet"
    import pyarrow.parquet as pq

    pq.write_table(manifest, manifest_path)
    out = tmp_path / "schedule"
    write_shards(storage, manifest, out, 2, 4, 2, split_names=["train"])
    before = sorted(digest(p) for p in (out / "shards").rglob("*.parquet"))
    script = SHARDS_SCRIPT.format(manifest=str(manifest_path), root=str(storage.root), out=str(out))
    kill_when(script, out, ".shards.*.tmp")
    assert sorted(digest(p) for p in (out / "shards").rglob("*.parquet")) == before
    assert temporaries(out)
    write_shards(storage, manifest, out, 2, 4, 2, split_names=["train"])
    assert not temporaries(out)
    assert sorted(digest(p) for p in (out / "shards").rglob("*.parquet")) == before


FRAMES_SCRIPT = """
    import time
    from refinery.multimodal.keyframes import FrameStore

    with FrameStore({root!r}, "video_keyframes", "clips") as store:
        for i in range(200):
            store.write("v1", i, b"jpeg bytes %d" % i)
            time.sleep(0.05)
"""


def test_keyframe_folders_are_replaced_whole(tmp_path):
    from refinery.multimodal.keyframes import FrameStore

    root = tmp_path / "storage"
    with FrameStore(root, "video_keyframes", "clips") as store:
        store.write("v1", 0, b"old frame")
    final = root / "video_keyframes" / "clips"
    kill_when(FRAMES_SCRIPT.format(root=str(root)), final.parent, ".clips.*.tmp")
    assert sorted(p.name for p in final.rglob("*.jpg")) == ["000000.jpg"]
    assert (final / "v1" / "000000.jpg").read_bytes() == b"old frame"
    with FrameStore(root, "video_keyframes", "clips") as store:
        store.write("v1", 3, b"new frame")
    assert not temporaries(final.parent)
    assert sorted(p.name for p in final.rglob("*.jpg")) == ["000003.jpg"]


MODEL_SCRIPT = """
    import time
    from refinery.paths import Layout
    from refinery.quality import reference
    from refinery.quality.reference import ReferenceLMParams, train_reference_lm

    real = reference.build_binary
    def slow(*args, **kwargs):
        time.sleep(60)  # the training folder exists and lmplz has run
        return real(*args, **kwargs)
    reference.build_binary = slow
    train_reference_lm(Layout.at({home!r}), ReferenceLMParams(), 3)
"""


def test_a_model_killed_while_training_is_never_published(tmp_path):
    from refinery.paths import Layout
    from refinery.quality.artifacts import current, models_dir
    from refinery.quality.reference import ReferenceLMParams, train_reference_lm
    from refinery.sample.reference_sample import build_reference_sample

    pytest.importorskip("kenlm")
    layout = Layout.at(tmp_path / "home")
    build_reference_sample(layout.inbox_kind("reference"))
    folder = models_dir(layout.home, "reference_lm")
    kill_when(MODEL_SCRIPT.format(home=str(layout.home)), folder, ".train.*.tmp", timeout=300)
    assert current(folder) is None and not list(folder.glob("*.binary"))
    assert temporaries(folder)
    result = train_reference_lm(layout, ReferenceLMParams(), 3)
    assert current(folder).path == result.artifact.path and not temporaries(folder)
