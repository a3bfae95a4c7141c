"""What lets a retried step skip written slices: fingerprinted staging kept across attempts, done
markers checked against their parts, and the local engine's map_to_parts (the same parts, markers
and per-part summaries as the Ray engine's)."""

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.local import LocalEngine
from refinery.engine.resume import ResumableParts, scratch_folder
from refinery.manifest import read_manifest
from refinery.quantiles import QuantileSketch
from refinery.storage import Storage


def table(n: int, start: int = 0) -> pa.Table:
    return pa.table({"id": [f"d{i}" for i in range(start, start + n)], "x": list(range(start, start + n))})


def test_a_retry_finds_the_slices_marked_done_and_a_new_fingerprint_starts_clean(tmp_path):
    storage = Storage(tmp_path)
    first = ResumableParts(storage, "stage", "src", "aaaa")
    for i in range(3):
        first.write_part(i, table(2, 2 * i))
        first.write_part(i, table(0), rejected=True)
    first.mark_done(0, {"rows": 2})
    first.mark_done(1, {"rows": 2})
    (first.staging() / first.part_name(1)).write_bytes(b"torn")  # not what its marker names
    retry = ResumableParts(storage, "stage", "src", "aaaa")
    assert retry.done(0) == {"rows": 2} and retry.done(1) is None and retry.done(2) is None
    for i in (1, 2):
        retry.write_part(i, table(2, 2 * i))
    path, _ = retry.commit(3)
    assert pd.read_parquet(path)["x"].tolist() == list(range(6))
    # markers are not output; the manifest, written last, lists the parts
    assert sorted(p.name for p in path.iterdir() if not p.name.startswith("part-")) == ["_manifest.json"]
    assert [(p["name"], p["rows"]) for p in read_manifest(path)["parts"]] == [
        (f"part-0000{i}.parquet", 2) for i in range(3)
    ]
    stale = ResumableParts(storage, "stage", "src", "bbbb")
    stale.write_part(0, table(1))
    stale.write_part(0, table(0), rejected=True)
    stale.mark_done(0, {})
    changed = ResumableParts(storage, "stage", "src", "cccc")  # other parameters, other rows: clean
    assert changed.done(0) is None and not stale.staging().exists()


def test_scratch_folders_of_another_fingerprint_are_removed(tmp_path):
    storage = Storage(tmp_path)
    old = scratch_folder(storage, "stage", "src", "scores", "k1")
    (old / "part-00000.parquet").write_bytes(b"x")
    kept = scratch_folder(storage, "stage", "src", "signatures", "k1")
    new = scratch_folder(storage, "stage", "src", "scores", "k2")
    assert new.is_dir() and not old.exists() and kept.is_dir()


def test_local_map_to_parts_writes_each_slice_once_and_resumes(tmp_path):
    source = tmp_path / "up.parquet"
    values = np.exp(np.random.default_rng(1).normal(3, 1, 50))
    pq.write_table(pa.table({"id": [str(i) for i in range(50)], "v": values}), source, row_group_size=10)
    engine = LocalEngine()
    engine.slice_rows = 20
    calls = []

    def make():
        def fn(frame: pd.DataFrame) -> pd.DataFrame:
            calls.append(len(frame))
            return pd.DataFrame({"double": frame["v"] * 2})

        return fn

    def summarize(part: pa.Table) -> dict:
        return QuantileSketch.of(part.column("double").to_numpy()).to_dict()

    folder = tmp_path / "out"
    folder.mkdir()
    parts = engine.map_to_parts(source, make, ["v"], folder, batch_rows=10, summarize=summarize)
    assert [p["index"] for p in parts] == [0, 1, 2] and [p["rows"] for p in parts] == [20, 20, 10]
    assert not any(p["reused"] for p in parts) and sum(calls) == 50
    written = pd.concat(pd.read_parquet(folder / f"part-{i:05d}.parquet") for i in range(3))
    assert np.allclose(written["double"], values * 2)
    merged = QuantileSketch.merged(QuantileSketch.from_dict(p["summary"]) for p in parts)
    assert merged.to_dict() == QuantileSketch.of(values * 2).to_dict()
    (folder / "part-00001.parquet").unlink()  # lost: redone; the others are reused
    again = engine.map_to_parts(source, make, ["v"], folder, batch_rows=10, summarize=summarize)
    assert [p["reused"] for p in again] == [True, False, True] and sum(calls) == 70
