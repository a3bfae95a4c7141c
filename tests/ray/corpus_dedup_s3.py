"""corpus_fuzzy_dedup on the ray engine over an object-store root, through Dagster, after the rule
chain of tests/ray/test_ray_on_object_storage.py (its homes: the local engine on a local root, the
ray engine on S3). Every shuffle task runs on the cluster's workers and writes under the bucket; the
first attempt of piece 0's table task writes its files (its part straight into the table's folder)
and is killed (SIGKILL) before its done marker. Ray runs it again; the table equals the local root's
row for row, the killed attempt's part is in no manifest and is deleted, nothing of the shuffle stays."""

from __future__ import annotations

import os

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from assets import corpus_fuzzy_dedup
from refinery import names
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.dagster.corpus_dedup_s3 import TABLE, metadata_of, shuffle_leftovers

NO_REPLAY = {"ops": {names.CORPUS_FUZZY_DEDUP: {"config": {"replay_incremental": False}}}}
FIGURES = ("documents_in", "kept", "removed", "verified_edges", "components_with_duplicates",
           "largest_component", "removed_by_batch", "removed_by_incremental", "only_batch")  # fmt: skip


def check_corpus_dedup_on_ray_over_s3(instance, homes: dict, engine, root: str, markers, monkeypatch) -> None:
    import ray

    from refinery.dedup import corpus_shuffle
    from tests.ray import dedup_faults

    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    local = dg.materialize(
        [corpus_fuzzy_dedup], instance=instance, resources=resources_for(homes["local"]), run_config=NO_REPLAY
    )
    assert local.success
    monkeypatch.setenv(STORAGE_ROOT_ENV, root)
    monkeypatch.setenv("REFINERY_TEST_MARKERS", str(markers))
    monkeypatch.setattr(corpus_shuffle, "table_task", dedup_faults.table_task_dying_mid_write)
    try:
        on_ray = dg.materialize(
            [corpus_fuzzy_dedup],
            instance=instance,
            resources=resources_for(homes["ray"], engine=engine),
            run_config=NO_REPLAY,
        )
    finally:
        ray.shutdown()
    assert on_ray.success and all(c.passed for c in on_ray.get_asset_check_evaluations())
    killed = int((dedup_faults.claims_folder() / "table-mid-write").read_text())
    assert killed != os.getpid()
    with pytest.raises(ProcessLookupError):  # the worker really died
        os.kill(killed, 0)
    store = ObjectStorage(root)
    got = store.read(*TABLE)
    pd.testing.assert_frame_equal(got, Storage(homes["local"].storage).read(*TABLE))
    assert (~got["kept"]).sum() >= 1  # the near copy the chain left in exact_deduplicated
    meta, want = metadata_of(on_ray), metadata_of(local)
    for figure in FIGURES:
        assert meta[figure] == want[figure], figure
    assert meta["signatures_computed_by"] == "ray" and meta["shuffle"]["pieces"] > 2
    manifest = store.manifest(*TABLE)
    assert len(manifest["parts"]) == meta["shuffle"]["pieces"]
    folder = store.parts_path(*TABLE)
    found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
    assert found == {p["name"] for p in manifest["parts"]} | {"_manifest.json"}  # the killed part went
    assert shuffle_leftovers(store) == []
