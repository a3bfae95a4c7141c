"""corpus_fuzzy_dedup submitted as a Ray job (dagster-ray's PipesRayJobClient) to a real loopback
cluster with its dashboard (the job server), results back through Dagster Pipes.

The session's cluster (tests/ray/shared_cluster.py: a head with the dashboard and a worker node,
each in its own process group); ``ray_job_cluster`` gives its dashboard's URL.
The step in this process never attaches to Ray: it submits over HTTP, and the table, the figures,
the checks and the data version come from the job's Pipes messages.
"""

from __future__ import annotations

import sys

import dagster as dg
import pandas as pd
import pytest

from refinery import names
from refinery.manifest import read_manifest
from refinery.paths import Layout
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.dagster.corpus_dedup_scenario import corpus, materialize_corpus
from tests.ray.shared_cluster import ROOT

pytestmark = pytest.mark.ray


def _metadata(result) -> dict:
    event = result.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_corpus_fuzzy_dedup_as_a_ray_job_equals_the_step(ray_job_cluster, tmp_path, monkeypatch):
    import ray

    from assets import corpus_fuzzy_dedup
    from resources import EngineResource

    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    home = Layout.at(tmp_path / "home")
    home.inbox_kind("text").mkdir(parents=True)
    small_groups = {"ops": {names.EXACT_DEDUPLICATED: {"config": {"batch_rows": 4}}}}
    step = {"replay_incremental": False}
    job = {
        **step,
        "submit": "ray_job",
        "ray_dashboard": ray_job_cluster,
        "ray_job_python": sys.executable,
        "ray_job_env": {"PYTHONPATH": str(ROOT), "RAY_AUTH_MODE": "disabled"},
    }
    storage = Storage(home.storage)
    # The job's tasks take the engine resource's slice size (several pieces per partition, two nodes).
    engine = EngineResource(kind="local", slice_rows=4, node_ip_address="127.0.0.1")
    with dg.instance_for_test() as instance:
        materialize_corpus(instance, home, corpus(per_kind=2), run_config=small_groups)
        local = dg.materialize(
            [corpus_fuzzy_dedup], instance=instance, resources=resources_for(home),
            run_config={"ops": {names.CORPUS_FUZZY_DEDUP: {"config": step}}},
        )  # fmt: skip
        assert local.success
        want = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
        on_job = dg.materialize(
            [corpus_fuzzy_dedup], instance=instance, resources=resources_for(home, engine=engine),
            run_config={"ops": {names.CORPUS_FUZZY_DEDUP: {"config": job}}},
        )  # fmt: skip
        assert on_job.success
        assert not ray.is_initialized()  # the step never attached to the cluster: it submitted a job
        record = instance.get_latest_materialization_event(dg.AssetKey(names.CORPUS_FUZZY_DEDUP))
        data_version = record.asset_materialization.tags.get("dagster/data_version")
    got = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    pd.testing.assert_frame_equal(got, want)
    assert (~got["kept"]).sum() >= 4
    assert len(storage.files(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)) > 4  # pieces of 4 rows
    meta, want_meta = _metadata(on_job), _metadata(local)
    assert str(meta["Ray Job ID"]).startswith("pipes-")  # through Pipes, from PipesRayJobClient
    assert meta["signatures_computed_by"] == meta["pairs_grouped_by"] == "ray"  # on the cluster's workers
    for figure in ("dagster/row_count", "documents_in", "kept", "removed", "components_with_duplicates",
                   "largest_component", "candidate_pairs", "verified_edges", "removed_by_batch",
                   "removed_by_incremental", "only_batch"):  # fmt: skip
        assert meta[figure] == want_meta[figure], figure
    assert meta["dagster/row_count"] == len(want)
    assert meta["removed"] == int((~want["kept"]).sum()) > 0
    manifest = read_manifest(storage.parts_path(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP))
    assert data_version == manifest["version"] == meta["manifest"]["version"]
    checks = on_job.get_asset_check_evaluations()
    assert {c.check_name for c in checks} == {"every_document_once", "one_kept_per_component"}
    assert all(c.passed for c in checks)
