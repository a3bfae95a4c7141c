"""The ``ray`` engine with the storage root on an object store (moto's S3 server on loopback), through
Dagster, on the session's two-node loopback cluster.

The rule-based chain raw_documents → fuzzy_deduplicated: the workers read their slices from S3 and
write their parts straight under the root (named after the attempt), the step commits each
partition by writing its manifests last; the hashes and signatures are written by the workers to
S3 and the claims' outcomes read back from there. Rows, reasons and order equal the local engine's
on a local root. A stage failing once on one slice is retried by Dagster, and the retry sends only
the slices without a done marker on S3. Afterwards the bucket holds the manifests and the parts
they list, nothing else: no marker, no scratch part, no part of the failed attempt.

The workers learn the endpoint from the root's URI alone (its query): nothing else tells them where
the S3 server listens. The root here also carries the access key in its authority
(``s3://key:secret@bucket/…``), the form for workers with no credentials of their own; moto does not
check credentials, so what this proves is that such a URI is parsed right everywhere (paths, parts,
scratch folders), not that the key was needed.

Then, on the same homes, the model stages: the ray engine over S3 against the local engine on a local
root (:mod:`tests.ray.model_stages_on_s3`).
"""

from __future__ import annotations

import dagster as dg
import pandas as pd
import pyarrow.fs as pafs
import pytest

from assets import TEXT_PREFILTER
from refinery import names
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.sample import prose
from refinery.storage import Storage
from resources import EngineResource
from tests.dagster.conftest import ALPHA, NEAR_COPY, build_inbox, jsonl, resources_for
from tests.ray.corpus_dedup_s3 import check_corpus_dedup_on_ray_over_s3
from tests.ray.model_stages_on_s3 import check_model_stages_on_ray_over_s3
from tests.ray.shared_cluster import ray_cluster  # noqa: F401  (the session's cluster)
from tests.s3_server import CREDENTIALS, s3_credentials, s3_root

pytestmark = pytest.mark.ray
s3 = (s3_root, s3_credentials)  # fixtures, used by name
STAGES = [a.key.to_user_string() for a in TEXT_PREFILTER]


def with_credentials(root: str) -> str:
    """The root URI with the access key in its authority (for workers with no credentials of their own)."""
    key, secret = CREDENTIALS["AWS_ACCESS_KEY_ID"], CREDENTIALS["AWS_SECRET_ACCESS_KEY"]
    return root.replace("s3://", f"s3://{key}:{secret}@", 1)


def test_rule_chain_on_ray_over_s3_equals_the_local_engine(ray_cluster, tmp_path, s3_root, monkeypatch):  # noqa: F811
    import ray

    from tests.ray.flaky_stage import flaky_copy

    address, markers_root = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    homes = {kind: Layout.at(tmp_path / kind) for kind in ("local", "ray")}
    copies = [{"text": ALPHA[1]}, {"text": prose.surface_variant(ALPHA[2])}, {"text": NEAR_COPY}]
    for home in homes.values():  # one source with its own exact and near duplicates (two files)
        build_inbox(home)
        (home.inbox_source("text", "alpha") / "more.jsonl").write_bytes(jsonl(copies))
    root = with_credentials(s3_root)
    engine = EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=3)
    results = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["alpha"])
        for kind, home in homes.items():
            markers = tmp_path / f"markers-{kind}"
            markers.mkdir()
            config = {
                "ops": {
                    names.RAW_DOCUMENTS: {"config": {"batch_rows": 3}},  # several slices per partition
                    # "french" is in the last slice: the first attempt of the ray run fails there once.
                    "flaky_copy": {
                        "config": {"markers": str(markers), "fail_id": "french" * (kind == "ray")}
                    },
                }
            }
            if kind == "ray":
                monkeypatch.setenv(STORAGE_ROOT_ENV, root)
            overrides = {"engine": engine} if kind == "ray" else {}
            try:
                results[kind] = dg.materialize(
                    [*TEXT_PREFILTER, flaky_copy],
                    partition_key="alpha",
                    instance=instance,
                    resources=resources_for(home, **overrides),
                    run_config=config,
                )
            finally:
                ray.shutdown()
            assert results[kind].success
        retries = instance.all_logs(results["ray"].run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
        # corpus_fuzzy_dedup over the same homes (a table task killed mid-write on the ray run).
        check_corpus_dedup_on_ray_over_s3(instance, homes, engine, root, markers_root, monkeypatch)
    store, local = ObjectStorage(root), Storage(homes["local"].storage)
    assert not homes["ray"].storage.exists()  # only the bucket holds data

    for stage in [*STAGES, "flaky_copy"]:  # row for row, reason for reason, in order
        for rejected in (False, True):
            pd.testing.assert_frame_equal(
                store.read(stage, "alpha", rejected=rejected), local.read(stage, "alpha", rejected=rejected)
            )
        stats = store.read_stats(stage)["alpha"]
        if stage != names.RAW_DOCUMENTS:  # every later stage ran on the workers, several slices
            assert stats["engine"]["engine"] == "ray" and stats["engine"]["slices"] > 2, stage
        # Each partition: its manifests and exactly the parts they list (no part of a failed attempt).
        for rejected in (False, True):
            folder = store.parts_path(stage, "alpha", rejected)
            listed = {p["name"] for p in store.manifest(stage, "alpha", rejected)["parts"]}
            found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
            assert found == listed | {"_manifest.json"}, (stage, rejected)
    for stage, reason in (
        (names.EXACT_DEDUPLICATED, "exact_duplicate"),
        (names.FUZZY_DEDUPLICATED, "near_duplicate"),
    ):
        assert reason in set(store.read(stage, "alpha", rejected=True)["reason"]), stage
    assert all(c.passed for c in results["ray"].get_asset_check_evaluations())
    meta = results["ray"].asset_materializations_for_node(names.FUZZY_DEDUPLICATED)[0].metadata
    assert meta["signatures_computed_by"].value == "ray"

    # The flaky stage failed once on its last slice; the retry sent only what was not done.
    assert len(retries) == 1
    engine_stats = store.read_stats("flaky_copy")["alpha"]["engine"]
    assert engine_stats["slices_reused"] >= 1
    assert engine_stats["slices_processed"] + engine_stats["slices_reused"] == engine_stats["slices"]

    # No marker, key, signature or outcome part is left on the bucket.
    leftovers = [
        i.path
        for top in ("_work", "_staging")
        for i in store.fs.get_file_info(
            pafs.FileSelector(f"{store.base}/{top}", allow_not_found=True, recursive=True)
        )
        if i.type == pafs.FileType.File
    ]
    assert leftovers == []

    # Then the model stages on the same homes: the ray engine over S3 against the local engine.
    check_model_stages_on_ray_over_s3(homes, root, engine, monkeypatch)
