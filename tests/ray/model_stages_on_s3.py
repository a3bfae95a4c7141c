"""What tests/ray/test_ray_on_object_storage.py runs after the rule-based chain on its two homes (so
the chain runs once): the model stages with the ``ray`` engine over the S3 root, against the local
engine on a local root.

Both homes train the same two models (reference_lm, quality_classifier: in the step, as `refinery
run` does). Then ``perplexity_scored`` (its first pass written by the workers under the root),
``quality_scored`` (the classifier on a Ray actor pool: decode tasks, the model actors writing their
scores to a scratch folder on S3, the part tasks writing each slice's kept and rejected rows straight
under the root, the manifests written last by the step) and ``document_embeddings`` (the bundled
MiniLM on an actor pool, each slice's part written into the partition's folder on S3, the manifest
last) run through Dagster. Rows, reasons and order equal the local engine's; vectors within float
tolerance. Afterwards the bucket holds the manifests and exactly the parts they list: no scratch
folder, no marker. Last ``semantic_deduplicated``: on the ``ray`` engine over S3 (its shuffle's tasks
and the workers writing its slices read and write the bucket, committed by done markers and the
manifest) against the local engine's one-process plan on the local root: the same kept and removed
rows, reasons and ``duplicate_of``, and nothing of the shuffle left in the bucket.
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow.fs as pafs

from assets import TEXT_MODELS, TEXT_QUALITY
from refinery import names
from refinery.object_storage import ObjectStorage
from refinery.paths import STORAGE_ROOT_ENV, Layout
from refinery.quality.embeddings import read_embeddings
from refinery.sample.reference_sample import build_reference_sample
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.s3_server import scratch_leftovers

POOLED = [names.PERPLEXITY_SCORED, names.QUALITY_SCORED, names.DOCUMENT_EMBEDDINGS]
ROW_STAGES = [names.PERPLEXITY_SCORED, names.QUALITY_SCORED]
BY_NAME = {a.key.to_user_string(): a for a in TEXT_QUALITY}
# One small source: the classifier trains on its few documents (the check must not stop the chain).
CLASSIFIER = {"min_documents_per_class": 2, "min_heldout_auc": 0.0, "epochs": 2}
# Several clusters over the sample's few documents: the shuffle's reducers each take some.
# epsilon: the chain's exact and near copies are gone by now; articles on one topic are still alike.
SEMANTIC = {"ops": {names.SEMANTIC_DEDUPLICATED: {"config": {"docs_per_cluster": 4, "epsilon": 0.2}}}}


def _model_stages(instance, home: Layout, **overrides) -> dg.ExecuteInProcessResult:
    build_reference_sample(home.inbox_kind("reference"))
    models = dg.materialize(
        TEXT_MODELS,
        instance=instance,
        resources=resources_for(home),
        run_config={"ops": {names.QUALITY_CLASSIFIER: {"config": CLASSIFIER}}},
    )
    assert models.success
    return dg.materialize(
        [BY_NAME[n] for n in POOLED],
        partition_key="alpha",
        instance=instance,
        resources=resources_for(home, **overrides),
    )


def _semantic(instance, home: Layout, **overrides) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [BY_NAME[names.SEMANTIC_DEDUPLICATED]],
        partition_key="alpha",
        instance=instance,
        resources=resources_for(home, **overrides),
        run_config=SEMANTIC,
    )


def check_model_stages_on_ray_over_s3(homes: dict[str, Layout], root: str, engine, monkeypatch) -> None:
    """``homes['local']`` and ``homes['ray']`` hold the rule-based chain of source alpha, on a local
    root and on ``root`` (S3); ``engine`` is the ray EngineResource."""
    import ray

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["alpha"])
        monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
        local_result = _model_stages(instance, homes["local"])
        local_semantic = _semantic(instance, homes["local"])
        monkeypatch.setenv(STORAGE_ROOT_ENV, root)
        try:
            ray_result = _model_stages(instance, homes["ray"], engine=engine)
            ray_semantic = _semantic(instance, homes["ray"], engine=engine)
        finally:
            ray.shutdown()
    for result in (local_result, ray_result, local_semantic, ray_semantic):
        checks = result.get_asset_check_evaluations()
        assert result.success and checks and all(c.passed for c in checks)
    store, local = ObjectStorage(root), Storage(homes["local"].storage)
    assert not homes["ray"].storage.exists()  # only the bucket holds data

    for stage in [*ROW_STAGES, names.SEMANTIC_DEDUPLICATED]:  # row for row, reason for reason, in order
        for rejected in (False, True):
            pd.testing.assert_frame_equal(
                store.read(stage, "alpha", rejected=rejected),
                local.read(stage, "alpha", rejected=rejected),
                check_exact=False,
                rtol=1e-5,
            )
        assert store.read_stats(stage)["alpha"]["engine"]["engine"] == "ray", stage
    pool = ray_result.asset_materializations_for_node(names.QUALITY_SCORED)[0].metadata["engine"].value
    assert pool["model_pool"]["slices"] > 2  # several slices, decoded and scored on the pool
    on_s3, on_disk = read_embeddings(store, "alpha"), read_embeddings(local, "alpha")
    assert (on_s3.ids, on_s3.text_hashes, on_s3.model, on_s3.dim) == (
        on_disk.ids,
        on_disk.text_hashes,
        on_disk.model,
        on_disk.dim,
    )
    np.testing.assert_allclose(on_s3.vectors, on_disk.vectors, atol=1e-5)
    meta = ray_result.asset_materializations_for_node(names.DOCUMENT_EMBEDDINGS)[0].metadata
    assert meta["engine"].value["model_pool"]["slices"] > 2
    # Semantic dedup decided something (near copies removed, naming the copy they duplicate), and
    # its shuffle ran as tasks on the cluster, every step over several tasks.
    removed = local.read(names.SEMANTIC_DEDUPLICATED, "alpha", rejected=True)
    assert len(removed) and removed["duplicate_of"].notna().all()
    meta = ray_semantic.asset_materializations_for_node(names.SEMANTIC_DEDUPLICATED)[0].metadata
    assert meta["semantic_dedup_ran_on"].value == "ray"
    assert store.read_stats(names.SEMANTIC_DEDUPLICATED)["alpha"]["engine"]["slices"] > 2

    # Each output: its manifests and exactly the parts they list; no scratch, marker or staging left.
    for stage, sides in (
        (names.QUALITY_SCORED, (False, True)),
        (names.DOCUMENT_EMBEDDINGS, (False,)),
        (names.SEMANTIC_DEDUPLICATED, (False, True)),
    ):
        for rejected in sides:
            folder = store.parts_path(stage, "alpha", rejected)
            listed = {p["name"] for p in store.manifest(stage, "alpha", rejected)["parts"]}
            found = {i.base_name for i in store.fs.get_file_info(pafs.FileSelector(folder))}
            assert found == listed | {"_manifest.json"}, (stage, rejected)
    assert scratch_leftovers(store) == []
