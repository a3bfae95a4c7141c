"""semantic_deduplicated on a real two-node Ray cluster on loopback, through Dagster ``materialize``:
k-means fitted on a sample in the step, assignment, the rule per cluster and the collection of the
decisions as Ray tasks on the workers, then the output written by the workers, a slice each. Three
partitions in turn (each later one against the kept documents of the earlier ones): the rows,
reasons and figures equal the local engine's."""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pytest

from assets.text_stages import semantic_deduplicated
from refinery.names import SEMANTIC_DEDUPLICATED
from refinery.paths import Layout
from refinery.storage import Storage
from resources import EngineResource
from tests.dagster.conftest import resources_for
from tests.ray.test_ray_cluster import ray_cluster  # noqa: F401  (the module's own two-node cluster)
from tests.semantic_partitions import corpus_vectors, write_partition

pytestmark = pytest.mark.ray

SOURCES = ["alpha", "beta", "gamma"]
CONFIG = {"ops": {SEMANTIC_DEDUPLICATED: {"config": {"docs_per_cluster": 20, "epsilon": 0.05,
                                                     "kmeans_sample_rows": 50}}}}  # fmt: skip


def _metadata(result) -> dict:
    event = result.asset_materializations_for_node(SEMANTIC_DEDUPLICATED)[0]
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_semantic_dedup_on_two_nodes_equals_the_local_engine(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    import ray

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    vectors = corpus_vectors(seed=11, sizes=[80, 70, 90])
    homes = {"local": Layout.at(tmp_path / "local"), "ray": Layout.at(tmp_path / "ray")}
    for home in homes.values():
        for source, v in zip(SOURCES, vectors, strict=True):
            write_partition(Storage(home.storage), source, v)
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=16)
    meta = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", SOURCES)
        try:
            for name, home in homes.items():
                extra = {"engine": engine} if name == "ray" else {}
                for source in SOURCES:  # in order: each is deduplicated against the earlier ones
                    result = dg.materialize(
                        [semantic_deduplicated],
                        partition_key=source,
                        instance=instance,
                        resources=resources_for(home, **extra),
                        run_config=CONFIG,
                    )
                    assert result.success
                    meta[name, source] = _metadata(result)
        finally:
            ray.shutdown()
    local, on_ray = Storage(homes["local"].storage), Storage(homes["ray"].storage)
    removed, nodes = 0, set()
    for source in SOURCES:
        for rejected in (False, True):
            want = local.read(SEMANTIC_DEDUPLICATED, source, rejected=rejected)
            got = on_ray.read(SEMANTIC_DEDUPLICATED, source, rejected=rejected)
            pd.testing.assert_frame_equal(got, want)
        removed += len(want)
        m, w = meta["ray", source], meta["local", source]
        assert m["semantic_dedup_ran_on"] == "ray" and w["semantic_dedup_ran_on"] == "local"
        figures = ["clusters", "cluster_size_max", "cluster_size_median", "claims_compared"]
        figures += ["removed_at_epsilon", "duplicates_within_or_across", "claims_from_sources"]
        for figure in figures:
            assert m[figure] == w[figure], (source, figure)
        distributed = m["distributed"]
        assert (
            distributed["tasks"]["sample"] > 1 and distributed["tasks"]["decide"] == distributed["reducers"]
        )
        assert distributed["peak_rss_mb_per_task"]["decide"] > 0  # measured in the Ray workers
        nodes.add(distributed["nodes"])
        written = m["engine"]  # the output written by the workers, a slice each, never by the step
        assert written["engine"] == "ray" and written["slices"] > 1, written
        assert written["slices_processed"] == written["slices"]
    assert removed >= 20 and max(nodes) == 2  # tasks ran on both nodes
    reasons = on_ray.read(SEMANTIC_DEDUPLICATED, "gamma", rejected=True)
    assert reasons["duplicate_of"].str.startswith(("alpha/", "beta/")).any()  # across partitions
    assert not list((homes["ray"].storage / "_shuffle").rglob("*.parquet"))  # the shuffle's files are gone
