"""Model stages as Ray actor pools on a real two-node loopback cluster: decode tasks ahead of the
model actors, the model loaded once per actor and never on the driver, and the same outputs as the
in-process stage (within float tolerance). No GPU here: ``num_gpus=0`` runs the same code path a
GPU pool runs (Ray only adds the GPU request to each actor)."""

from __future__ import annotations

import os
import random
from dataclasses import replace
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.engine.model_pool import ModelPool, ModelStage, run_model_stage
from refinery.engine.ray_engine import RayEngine
from refinery.sample import prose
from resources.compute import ComputeResource
from tests.ray import model_loads
from tests.ray.test_ray_cluster import ray_cluster  # noqa: F401 (the two-node cluster fixture)

pytestmark = pytest.mark.ray


@pytest.fixture
def partition(tmp_path):
    """40 documents in row groups of 5, so the partition makes 8 slices for the two nodes."""
    rng = random.Random(4)
    texts = [prose.article(rng, paragraphs=1) for _ in range(40)]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(40)], "text": texts})
    frame["key"] = "src/" + frame["id"]
    folder = tmp_path / "part"
    folder.mkdir()
    pq.write_table(
        pa.Table.from_pandas(frame, preserve_index=False), folder / "part-0.parquet", row_group_size=5
    )
    return folder, frame


def _markers(folder, what: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(what + "-"))


def test_embeddings_and_classifier_on_actor_pools_equal_in_process(
    ray_cluster,  # noqa: F811
    partition,
    tmp_path,
    monkeypatch,
):
    import ray

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    folder, frame = partition
    markers = tmp_path / "loads"
    markers.mkdir()
    engine = RayEngine(address=address, node_ip_address="127.0.0.1", slice_rows=5)
    pool = ComputeResource(ray_actors=2, batch_size=8, num_gpus=0).model_pool()
    assert pool == ModelPool(actors=2, num_gpus=0.0, batch_size=8)
    # The two nodes have one CPU each: half a CPU per actor leaves room for the decode tasks.
    pool = replace(pool, cpus_per_actor=0.5, decode_cpus=0.5)

    stage = ModelStage(["text"], partial(model_loads.load_embedder, str(markers)), model_loads.embed)
    try:
        vectors = run_model_stage(engine, folder, stage, pool)

        from refinery.quality.classifier import save_classifier, train_classifier
        from tests.unit.test_quality_classifier import PARAMS, junk

        rng = random.Random(8)
        positives = [(f"ref/{i}", prose.article(rng, paragraphs=2)) for i in range(40)]
        negatives = [(f"web/{i}", junk(rng)) for i in range(40)]
        path = tmp_path / "classifier.safetensors"
        save_classifier(train_classifier(positives, negatives, PARAMS), path)
        scored = ModelStage(
            ["text", "key"],
            partial(model_loads.load_classifier, str(markers), str(path)),
            model_loads.classify,
            decode=model_loads.first_words,
        )
        scores = run_model_stage(engine, folder, scored, pool)
    finally:
        ray.shutdown()

    # Loaded once per actor, never on the driver.
    for what in ("embedder", "classifier"):
        loads = _markers(markers, what)
        pids = {name.split("-")[1] for name in loads}
        # one load per actor process (Ray may not start every actor of the pool for 8 slices)
        assert len(loads) == len(pids) and 1 <= len(pids) <= pool.actors, loads
        assert str(os.getpid()) not in pids

    # The same outputs as in-process, in row order.
    from refinery.models.embedder import load_embedder
    from refinery.quality.classifier import load_classifier

    expected = model_loads.embed(load_embedder(device="cpu", batch_size=16), frame)
    assert vectors.shape == expected.shape == (40, expected.shape[1])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    decoded = model_loads.first_words(frame)
    np.testing.assert_allclose(scores, model_loads.classify(load_classifier(path), decoded), rtol=1e-12)
    assert not np.allclose(scores, model_loads.classify(load_classifier(path), frame))  # decode ran


def test_a_pool_needs_an_actor_and_a_batch():
    with pytest.raises(ValueError, match="at least one actor"):
        ModelPool(actors=0)
    with pytest.raises(ValueError, match="batch_size"):
        ModelPool(batch_size=0)


def test_semantic_dedup_decided_per_cluster_on_ray_equals_one_process(ray_cluster, monkeypatch):  # noqa: F811
    """Semantic dedup's clusters decided by a Ray Data groupby on the two nodes: the same decisions
    as the one-process plan."""
    import dataclasses

    import ray

    from refinery.dedup.semantic import Claims, SemanticDedupParams, plan
    from refinery.dedup.semantic_shuffle import plan_by_cluster
    from tests.unit.test_semdedup_rule import near_copies

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    vectors = near_copies(seed=5)
    ids = [f"d{i}" for i in range(len(vectors))]
    claims = Claims(keys=[f"other/c{i}" for i in range(10)], vectors=vectors[:10].copy())
    params = SemanticDedupParams(clusters=4, epsilon=0.05)
    engine = RayEngine(address=address, node_ip_address="127.0.0.1")
    try:
        got = plan_by_cluster("s", ids, vectors, claims, params, sample_rows=len(ids), engine=engine)
    finally:
        ray.shutdown()
    want = plan("s", ids, vectors, claims, params)

    def fields(d):
        return tuple(round(v, 5) if isinstance(v, float) else v for v in dataclasses.asdict(d).values())

    assert want.duplicates >= 10
    assert {i: fields(d) for i, d in got.decisions.items()} == {
        i: fields(d) for i, d in want.decisions.items()
    }
