"""The SFT chain on a real two-node Ray cluster on loopback, through Dagster's materialize(): the
same rows, reasons and selection as the local engine, with the per-row work on the workers.

raw_sft writes row groups of 4 records and the engine slices by 8 (two row groups), so every
partition is cut into several slices for the two nodes. sft_checked's rules run on the workers and
its claims in the step (refinery.sft.check_plan); sft_selected's embeddings come from model actors,
its k-means is fitted on a sample smaller than the partition, and its assignment and per-cluster
choice run as Ray tasks (refinery.sft.selection_plan). Both stages' rows are written by the workers as parts.

The ray home keeps its data on a local root for the first source and on an object store (moto's S3
on loopback, the key in the root's URI: the workers have no credentials of their own) for the
second: there the rule parts, the claims' outcomes, the embeddings, the selection's shuffle and the
rows' parts are all read and written under the bucket by the workers, committed by markers and
manifests. Afterwards neither root holds a plan: only the manifests and the parts they list.
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sample.sft_sample import build_sft_sample
from refinery.storage import Storage
from resources import EngineResource, build_resources
from tests.ray.test_ray_cluster import ray_cluster  # noqa: F401 (the two-node cluster fixture)
from tests.ray.test_ray_on_object_storage import with_credentials
from tests.s3_server import s3_credentials, s3_root, scratch_leftovers

pytestmark = pytest.mark.ray
s3 = (s3_root, s3_credentials)  # fixtures, used by name

SOURCES = ("alpaca", "chat")  # in this order on both engines: dedup is first come, first served
STAGES = ("sft_checked", "sft_selected")
CONFIG = {
    "ops": {
        "raw_sft": {"config": {"batch_rows": 4}},
        "sft_selected": {
            "config": {"budget_count": 9, "within_cluster": "centroid", "kmeans_sample_rows": 12}
        },
    }
}


def _materialize(instance, home: Layout, source: str, engine: EngineResource | None):
    if source not in instance.get_dynamic_partitions("sft_source"):
        instance.add_dynamic_partitions("sft_source", [source])
    extra = {"engine": engine} if engine is not None else {}
    resources = build_resources("local", home=str(home.home), device="cpu", batch_size=8, **extra)
    return dg.materialize(
        [raw_sft, sft_checked, sft_selected],
        partition_key=source,
        instance=instance,
        resources=resources,
        run_config=CONFIG,
    )


def _meta(result, asset: str) -> dict:
    event = next(
        e for e in result.get_asset_materialization_events() if e.asset_key.to_user_string() == asset
    )
    return {k: getattr(v, "value", v) for k, v in event.materialization.metadata.items()}


def test_sft_chain_on_two_nodes_equals_the_local_engine(ray_cluster, tmp_path, s3_root, monkeypatch):  # noqa: F811
    import ray

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    bucket = with_credentials(s3_root)
    ray_roots = {"alpaca": None, "chat": bucket}  # the ray home's root per source: local, then S3
    local, on_ray = Layout.at(tmp_path / "local"), Layout.at(tmp_path / "ray")
    for home in (local, on_ray):
        build_sft_sample(home.inbox_kind("sft"), seed=3, records_per_source=24)
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=8)
    results = {}
    with dg.instance_for_test() as instance:
        try:
            for source in SOURCES:
                monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
                assert _materialize(instance, local, source, None).success
                if ray_roots[source]:
                    monkeypatch.setenv(STORAGE_ROOT_ENV, ray_roots[source])
                results[source] = _materialize(instance, on_ray, source, engine)
                assert results[source].success
        finally:
            ray.shutdown()
    want, store = Storage(local.storage), ObjectStorage(bucket)
    for source in SOURCES:
        got = store if ray_roots[source] else Storage(on_ray.storage)
        for stage in STAGES:
            for rejected in (False, True):
                expected = want.read(stage, source, rejected=rejected)
                actual = got.read(stage, source, rejected=rejected)
                # the same rows, in the same order, for the same reasons (distances within float noise)
                pd.testing.assert_frame_equal(actual, expected, check_dtype=False, rtol=1e-4)
            stats = got.read_stats(stage)[source]["engine"]
            # (how many of the two nodes took slices depends on Ray's timing: these slices are quick)
            assert stats["engine"] == "ray" and stats["slices"] > 1 and stats["nodes"] >= 1, (stage, stats)
            assert len(got.files(stage, source)) == stats["slices"]  # one part per slice, written by workers
        # Each worker read its slices' decisions only: every record's once over all the slices (a
        # worker holding the partition's would count it per slice), as the local engine's step.
        rows = got.row_count("sft_checked", source)
        read = [s.read_stats("sft_selected")[source]["selection_decisions_read"] for s in (want, got)]
        assert read == [rows, rows], read
        rejected = want.read("sft_checked", source, rejected=True)
        assert rejected["reason"].notna().all() and len(rejected) >= 3
        selected = want.read("sft_selected", source)
        assert len(selected) == 9
        checked, picked = _meta(results[source], "sft_checked"), _meta(results[source], "sft_selected")
        assert checked["rules_checked_by"] == "ray" and checked["records_claimed_in_step"] > 0
        assert picked["selection_tasks"]["runner"] == "ray" and picked["selection_tasks"]["reducers"] == 2
        assert picked["kmeans_fitted_on"] == 12 < got.row_count("sft_checked", source)
    # Written and committed, the plans are gone from both roots: no embeddings, copies or decisions.
    assert not [p for p in (on_ray.storage / "_shuffle").rglob("*") if p.is_file()]
    assert store.partitions("sft_checked") == ["chat"]
    assert scratch_leftovers(store) == []
    for stage in ("raw_sft", *STAGES):  # each output: its manifests and exactly the parts they list
        for rejected in (False, True):
            folder = store.parts_path(stage, "chat", rejected)
            listed = {p["name"] for p in store.manifest(stage, "chat", rejected)["parts"]}
            found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
            assert found == listed | {"_manifest.json"}, (stage, rejected)
