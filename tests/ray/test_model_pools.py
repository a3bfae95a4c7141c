"""Model stages as Ray actor pools on a real two-node loopback cluster: decode tasks ahead of the
model actors, the model loaded once per actor and never on the driver, and the same outputs as the
in-process stage (within float tolerance). No GPU here: ``num_gpus=0`` runs the same code path a
GPU pool runs (Ray only adds the GPU request to each actor)."""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import shutil
import signal
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from refinery.engine.model_pool import ModelPool, ModelStage, run_model_stage
from refinery.engine.ray_engine import RayEngine
from refinery.sample import prose
from resources.compute import ComputeResource
from tests.ray import model_loads
from tests.ray.test_ray_cluster import ray_cluster  # noqa: F401 (the two-node cluster fixture)
from tests.ray.test_ray_on_object_storage import with_credentials
from tests.s3_server import s3_credentials, s3_root  # noqa: F401 (fixtures, used by name)

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


@contextlib.contextmanager
def _deadline(seconds: int):
    """Fails the test (TimeoutError in the main thread) instead of hanging past ``seconds``."""

    def expired(signum, frame):
        raise TimeoutError(f"the model pool did not finish in {seconds} s: it hangs")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def test_embeddings_and_classifier_on_model_actors_equal_in_process(
    ray_cluster,  # noqa: F811
    partition,
    tmp_path,
    monkeypatch,
):
    """The GPU path (model actors fed by decode tasks) with num_gpus=0, on the two one-CPU nodes,
    with the pool's defaults as a user leaves them (one CPU per actor and per decode task, an actor
    per node): the Ray Data pipeline it replaced waited forever there (its decode task fit on no
    node beside the actors). The classifier runs as the stages run it (run_pooled, outputs written
    by the actors, parts by the finish tasks) and loses an actor mid-slice: Ray restarts it, the
    slice is retried, the outputs are whole. Then the same on half-CPU actors with decode tasks
    beside them."""
    import ray

    from refinery.engine.model_pool import run_pooled

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    folder, frame = partition
    markers = tmp_path / "loads"
    markers.mkdir()
    engine = RayEngine(address=address, node_ip_address="127.0.0.1", slice_rows=5, dispatch="actors")
    pool = ComputeResource(ray_actors=2, batch_size=8, num_gpus=0).model_pool()
    assert pool == ModelPool(actors=2, num_gpus=0.0, batch_size=8, cpus_per_actor=1.0, decode_cpus=1.0)

    from refinery.quality.classifier import save_classifier, train_classifier
    from tests.unit.test_quality_classifier import PARAMS, junk

    rng = random.Random(8)
    positives = [(f"ref/{i}", prose.article(rng, paragraphs=2)) for i in range(40)]
    negatives = [(f"web/{i}", junk(rng)) for i in range(40)]
    path = tmp_path / "classifier.safetensors"
    save_classifier(train_classifier(positives, negatives, PARAMS), path)
    stage = ModelStage(["text"], partial(model_loads.load_embedder, str(markers)), model_loads.embed)
    scored = ModelStage(
        ["text", "key"],
        partial(model_loads.load_classifier, str(markers), str(path)),
        partial(model_loads.classify_dying_once, str(markers)),
        decode=model_loads.first_words,
        describe=lambda model: {"kind": type(model).__name__},
    )
    # Half-CPU actors with decode tasks beside them, an actor lost mid-slice again: its restart may
    # land on another node, where the first sizing of the decode tasks no longer fits (49.7 s in
    # the seventh session); the slice runs on the other actor, the decode tasks follow the restart.
    beside = ModelPool(actors=2, num_gpus=0.0, batch_size=8, cpus_per_actor=0.5, decode_cpus=1.0)
    again = tmp_path / "loads-beside"
    again.mkdir()
    scored_beside = ModelStage(
        ["text", "key"],
        partial(model_loads.load_classifier, str(again), str(path)),
        partial(model_loads.classify_dying_once, str(again)),
        decode=model_loads.first_words,
    )
    try:
        with _deadline(90):
            vectors = run_model_stage(engine, folder, stage, pool)
            run = run_pooled(engine, folder, scored, pool, model_loads.scores_of_slice, tmp_path / "scratch")
        with _deadline(30):
            run_beside = run_pooled(
                engine, folder, scored_beside, beside, model_loads.scores_of_slice, tmp_path / "scratch"
            )
    finally:
        ray.shutdown()

    from refinery.models.embedder import load_embedder
    from refinery.quality.classifier import load_classifier

    # Loaded once per actor, never on the driver; the lost actor's process loaded it again.
    assert (markers / "killed-once").exists()
    for what, most in (("embedder", pool.actors), ("classifier", pool.actors + 1)):
        loads = _markers(markers, what)
        pids = {name.split("-")[1] for name in loads}
        assert len(loads) == len(pids) and 1 <= len(pids) <= most, loads
        assert str(os.getpid()) not in pids
    described = run.describe()
    assert described["model_loads_per_actor"] == [1] * described["actors_used"], described
    # (which nodes ran slices is a race: a restarted actor may come back after the other finished)
    assert described["slices"] == 8 and described["actors"] == 2, described
    # the actors hold both CPUs: no decode task fits beside them, so they decode themselves
    assert described["decode_cpus"] == 0 and described["slices_decoded_by_actors"] == 8, described
    assert {p["model"]["kind"] for p in run.parts} == {type(load_classifier(path)).__name__}

    # The same outputs as in-process, in row order.
    expected = model_loads.embed(load_embedder(device="cpu", batch_size=16), frame)
    assert vectors.shape == expected.shape == (40, expected.shape[1])
    np.testing.assert_allclose(vectors, expected, atol=1e-5)
    scores = [s for part in sorted(run.parts, key=lambda p: p["index"]) for s in part["scores"]]
    decoded = model_loads.first_words(frame)
    np.testing.assert_allclose(scores, model_loads.classify(load_classifier(path), decoded), rtol=1e-12)
    assert not np.allclose(scores, model_loads.classify(load_classifier(path), frame))  # decode ran
    shape = run_beside.describe()
    assert (again / "killed-once").exists() and shape["actor_restarts"] == 1, shape
    assert shape["slices"] == 8 and shape["decode_cpus"] > 0, shape  # decode tasks ran beside the actors
    beside_scores = [s for part in sorted(run_beside.parts, key=lambda p: p["index"]) for s in part["scores"]]
    np.testing.assert_allclose(beside_scores, scores, rtol=1e-12)


def test_a_pool_needs_an_actor_and_a_batch():
    with pytest.raises(ValueError, match="at least one actor"):
        ModelPool(actors=0)
    with pytest.raises(ValueError, match="batch_size"):
        ModelPool(batch_size=0)


# -- the model stages through Dagster on the two nodes --------------------------------------------
SOURCE = "s"


def _home(tmp_path, name: str, upstream: str, frame: pd.DataFrame, row_group: int = 5):
    """A home whose ``upstream`` partition is ``frame`` in small row groups (several slices)."""
    from refinery.paths import Layout
    from refinery.storage import Storage

    layout = Layout.at(tmp_path / name)
    target = Storage(layout.storage).path(upstream, SOURCE)
    target.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.cast(
        pa.schema([pa.field(f.name, pa.string()) if f.type == pa.large_string() else f for f in table.schema])
    )
    pq.write_table(table, target, row_group_size=row_group)
    return layout


def _s3_upstream(root: str, upstream: str, frame: pd.DataFrame, row_group: int):
    """``upstream``'s partition on the object store root: ``frame`` as one part in small row groups
    (several slices), committed by its manifest."""
    from refinery.manifest import write_manifest_at
    from refinery.object_storage import ObjectStorage

    store = ObjectStorage(root)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    table = table.cast(
        pa.schema([pa.field(f.name, pa.string()) if f.type == pa.large_string() else f for f in table.schema])
    )
    folder = store.parts_path(upstream, SOURCE)
    pq.write_table(table, f"{folder}/part-00000.parquet", filesystem=store.fs, row_group_size=row_group)
    write_manifest_at(store.fs, folder, ["part-00000.parquet"], {})
    return store


def _materialize(asset, layout, engine: dict, config=None, partitions: str = "text_source", **resources):
    import dagster as dg

    from resources.engine import EngineResource
    from tests.dagster.conftest import resources_for

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(partitions, [SOURCE])
        result = dg.materialize(
            [asset],
            partition_key=SOURCE,
            instance=instance,
            resources=resources_for(layout, engine=EngineResource(**engine), **resources),
            run_config={"ops": {asset.key.path[-1]: {"config": config}}} if config else None,
        )
        assert result.success
        return result.asset_materializations_for_node(asset.key.path[-1])[0].metadata


def _ray_engine(address: str) -> dict:
    return {"kind": "ray", "address": address, "node_ip_address": "127.0.0.1", "slice_rows": 5}


def _pool_compute(**extra):
    """Two actors of half a CPU (the loopback nodes have one CPU each), batches of 8 rows."""
    return ComputeResource(
        device="cpu", batch_size=8, ray_actors=2, ray_cpus_per_actor=0.5, ray_decode_cpus=0.5, **extra
    )


def _check_loads(metadata, before: dict, warm: bool = False) -> dict:
    """Each worker process loaded its model once; the driver (this process) loaded none. ``warm``:
    a later stage of the same driver, whose worker processes may hold the model already (their
    per-process cache: 0 loads this run), but none loads it twice."""
    from refinery.models import loads

    pool = metadata["engine"].value["model_pool"]
    want = [1] * pool["actors_used"]
    per_worker = pool["model_loads_per_actor"]
    assert pool["actors_used"] >= 1 and (max(per_worker) <= 1 if warm else per_worker == want), pool
    assert loads.counts() == before, "the driver loaded a model"
    return pool


def _frames(layout, asset: str):
    from refinery.storage import Storage

    storage = Storage(layout.storage)
    return storage.read(asset, SOURCE), storage.read(asset, SOURCE, rejected=True)


def test_quality_scored_on_a_ray_pool_equals_in_process(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    import ray

    from assets.text_stages import quality_scored
    from refinery import names
    from refinery.models import loads
    from refinery.quality.classifier import save_classifier, train_classifier
    from resources.quality import QualityClassifierResource
    from tests.unit.test_quality_classifier import PARAMS, junk

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    rng = random.Random(8)
    positives = [(f"ref/{i}", prose.article(rng, paragraphs=2)) for i in range(40)]
    negatives = [(f"web/{i}", junk(rng)) for i in range(40)]
    model = tmp_path / "classifier.safetensors"
    save_classifier(train_classifier(positives, negatives, PARAMS), model)
    texts = [prose.article(rng, paragraphs=1) if i % 2 else junk(rng) for i in range(30)] + ["", "!!"]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    upstream = names.PERPLEXITY_SCORED
    on_ray, local = _home(tmp_path, "ray", upstream, frame), _home(tmp_path, "local", upstream, frame)
    quality = QualityClassifierResource(model_path=str(model))
    config = {"threshold": 0.5}
    before = loads.counts()
    try:
        meta = _materialize(
            quality_scored,
            on_ray,
            _ray_engine(address),
            config,
            quality_model=quality,
            compute=_pool_compute(),
        )
    finally:
        ray.shutdown()
    pool = _check_loads(meta, before)
    assert pool["slices"] == 7 and pool["actors"] == 2
    local_meta = _materialize(quality_scored, local, {"kind": "local"}, config, quality_model=quality)
    assert meta["model_sha256"].value == local_meta["model_sha256"].value
    kept, rejected = _frames(on_ray, names.QUALITY_SCORED)
    want_kept, want_rejected = _frames(local, names.QUALITY_SCORED)
    assert len(kept) and len(rejected)  # both decisions are exercised
    for got, want in ((kept, want_kept), (rejected, want_rejected)):
        assert got["id"].tolist() == want["id"].tolist()
        np.testing.assert_allclose(got["quality_score"], want["quality_score"], rtol=1e-9)
    assert rejected["reason"].tolist() == want_rejected["reason"].tolist()
    assert (rejected["reason"] == "quality.no_tokens").any()


def test_document_embeddings_on_a_ray_pool_equal_in_process(ray_cluster, partition, tmp_path, monkeypatch):  # noqa: F811
    import ray

    from assets.retrieval import vector_index
    from assets.text_embeddings import document_embeddings
    from assets.text_stages import semantic_deduplicated
    from refinery import names
    from refinery.manifest import read_manifest
    from refinery.models import loads
    from refinery.quality.embeddings import read_embeddings
    from refinery.retrieval.search import search
    from refinery.sql import connect
    from refinery.storage import PROVENANCE_KEY, Storage
    from resources.embedder import EmbedderResource

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    _, frame = partition
    upstream = names.QUALITY_SCORED
    on_ray, local = _home(tmp_path, "ray", upstream, frame), _home(tmp_path, "local", upstream, frame)
    compute = _pool_compute()
    before = loads.counts()
    try:
        meta = _materialize(
            document_embeddings,
            on_ray,
            _ray_engine(address),
            compute=compute,
            embedder=EmbedderResource(compute=compute),
        )
    finally:
        ray.shutdown()
    pool = _check_loads(meta, before)
    assert pool["slices"] == 8
    local_meta = _materialize(
        document_embeddings, local, {"kind": "local"}, embedder=EmbedderResource(compute=compute)
    )
    for key in ("model", "dimension", "backend", "quantize", "batch_size"):
        assert meta[key].value == local_meta[key].value, key
    got, want = (
        read_embeddings(Storage(on_ray.storage), SOURCE),
        read_embeddings(Storage(local.storage), SOURCE),
    )
    assert got.ids == want.ids == frame["id"].tolist() and got.text_hashes == want.text_hashes
    np.testing.assert_allclose(got.vectors, want.vectors, atol=1e-5)
    # The workers' parts are the output (no step merges them): a parts folder sealed by its manifest,
    # whose hash is the data version; stamped like the in-process file (the model as the actors
    # described it).
    ray_store, local_store = Storage(on_ray.storage), Storage(local.storage)
    folder = ray_store.parts_path(names.DOCUMENT_EMBEDDINGS, SOURCE)
    manifest = read_manifest(folder)
    assert not ray_store.path(names.DOCUMENT_EMBEDDINGS, SOURCE).exists()
    assert [p["name"] for p in manifest["parts"]] == [f"part-{i:05d}.parquet" for i in range(8)]
    assert manifest["rows"] == len(frame)
    assert ray_store.version(names.DOCUMENT_EMBEDDINGS, SOURCE) == manifest["version"]
    stamps = [
        pq.read_schema(store.files(names.DOCUMENT_EMBEDDINGS, SOURCE)[0]).metadata[PROVENANCE_KEY]
        for store in (ray_store, local_store)
    ]
    assert stamps[0] == stamps[1]
    assert not list(folder.parent.glob(".*"))  # no staging folder left

    # Every reader takes the parts folder as it takes the file: the vector index and search, the
    # DuckDB vector view, semantic dedup (on the local engine, both homes).
    query = " ".join(frame["text"].iloc[7].split()[:30])
    answers = {}
    for name, home in (("ray", on_ray), ("local", local)):
        _materialize(vector_index, home, {"kind": "local"})
        hits = [search(query, 5, home=home.home, exact=exact, with_stage=False) for exact in (False, True)]
        views = connect(home.storage).execute(
            "SELECT source, count(*) AS n, round(sum(array_inner_product(embedding, embedding)), 3) AS norms "
            "FROM vectors_documents GROUP BY 1"
        )
        _materialize(semantic_deduplicated, home, {"kind": "local"}, compute=compute)
        answers[name] = (hits, views.df(), _frames(home, names.SEMANTIC_DEDUPLICATED))
    assert answers["ray"][0][0]["id"].iloc[0] == "d7"
    for got, want in zip(answers["ray"][0], answers["local"][0], strict=True):
        assert got["id"].tolist() == want["id"].tolist()
        np.testing.assert_allclose(got["score"], want["score"], atol=1e-5)
    pd.testing.assert_frame_equal(answers["ray"][1], answers["local"][1])
    assert answers["ray"][1]["source"].tolist() == [SOURCE] and answers["ray"][1]["n"].tolist() == [40]
    for got, want in zip(answers["ray"][2], answers["local"][2], strict=True):
        pd.testing.assert_frame_equal(got, want)

    # The local engine over the ray home writes one file again, and removes the parts folder.
    _materialize(document_embeddings, on_ray, {"kind": "local"}, embedder=EmbedderResource(compute=compute))
    assert ray_store.path(names.DOCUMENT_EMBEDDINGS, SOURCE).is_file() and not folder.exists()
    assert read_embeddings(ray_store, SOURCE).ids == frame["id"].tolist()


def test_clip_scored_on_a_ray_pool_equals_in_process(ray_cluster, tmp_path, s3_root, monkeypatch):  # noqa: F811
    """Images decoded by CPU tasks, CLIP on the actors, parts attached by CPU tasks: the same scores
    and decode failures as the in-process stage, the tiny CLIP loaded once per actor. The pool runs
    over an object store root (moto's S3): its tasks and actors read the upstream parts, write their
    scratch outputs and the stage's parts through the root's URI; the step writes the manifests. The
    in-process stage runs on a local root."""
    import dagster as dg
    import ray

    from assets.multimodal import clip_scored, image_text_checked, raw_image_text
    from refinery import names
    from refinery.models import loads
    from refinery.paths import STORAGE_ROOT_ENV, Layout
    from refinery.sample.multimodal_sample import build_image_text_sample
    from refinery.storage import Storage
    from resources.clip import ClipResource
    from tests.dagster.conftest import resources_for

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    sample = Layout.at(tmp_path / "sample")
    build_image_text_sample(sample.inbox_kind("image_text"), seed=5, pairs=12)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("image_text_source", ["shapes"])
        assert dg.materialize(
            [raw_image_text, image_text_checked],
            partition_key="shapes",
            instance=instance,
            resources=resources_for(sample),
        ).success
    frame = Storage(sample.storage).read(names.IMAGE_TEXT_CHECKED, "shapes")
    broken = frame.iloc[[0]].assign(id="broken", image=[b"not an image"])
    frame = pd.concat([frame.iloc[:11], broken], ignore_index=True)
    upstream = names.IMAGE_TEXT_CHECKED
    local = _home(tmp_path, "local", upstream, frame, 3)
    on_ray, root = Layout.at(tmp_path / "ray"), with_credentials(s3_root)
    store = _s3_upstream(root, upstream, frame, 3)
    compute = _pool_compute()
    before = loads.counts()
    monkeypatch.setenv(STORAGE_ROOT_ENV, root)
    try:
        meta = _materialize(
            clip_scored, on_ray, _ray_engine(address), None, "image_text_source",
            compute=compute, clip=ClipResource(compute=compute),
        )  # fmt: skip
    finally:
        ray.shutdown()
        monkeypatch.delenv(STORAGE_ROOT_ENV)
    pool = _check_loads(meta, before)
    assert pool["slices"] == 2 and pool["batch_size"] == 8  # row groups of 3, slices of ≥ 5 rows
    local_meta = _materialize(
        clip_scored, local, {"kind": "local"}, None, "image_text_source", clip=ClipResource(compute=compute)
    )
    assert meta["model"].value == local_meta["model"].value
    assert meta["mean_cosine"].value == pytest.approx(local_meta["mean_cosine"].value, abs=1e-4)
    kept = store.read(names.CLIP_SCORED, SOURCE)
    rejected = store.read(names.CLIP_SCORED, SOURCE, rejected=True)
    want_kept, want_rejected = _frames(local, names.CLIP_SCORED)
    assert kept["id"].tolist() == want_kept["id"].tolist() and len(kept) == 11
    assert not on_ray.storage.exists()  # only the bucket holds data; no scratch or marker left there
    scratch = [f"{store.base}/{top}" for top in ("_work", "_staging", ".model_pool")]
    assert [i.path for top in scratch
            for i in store.fs.get_file_info(pafs.FileSelector(top, allow_not_found=True, recursive=True))
            if i.type == pafs.FileType.File] == []  # fmt: skip
    np.testing.assert_allclose(kept["clip_cosine"], want_kept["clip_cosine"], atol=1e-5)
    assert (
        rejected["id"].tolist() == ["broken"]
        and rejected["reason"].tolist() == want_rejected["reason"].tolist()
    )

    def detail(frame):  # PIL names the BytesIO object by its address: not part of the reason
        return [re.sub(r" at 0x[0-9a-f]+", "", d) for d in frame["reason_detail"]]

    assert detail(rejected) == detail(want_rejected) and "cannot identify image" in detail(rejected)[0]


def _video_home(tmp_path, name: str):
    """Three short videos (one asked about twice) and a fourth that changes after ingest."""
    from refinery.multimodal.video_synth import Stretch, write_stretches
    from refinery.paths import Layout

    layout = Layout.at(tmp_path / name)
    folder = layout.inbox_source("video", SOURCE)
    folder.mkdir(parents=True)
    size = {"fps": 4, "width": 64, "height": 48}
    write_stretches(
        folder / "a.mp4", [Stretch(3, "red", "circle"), Stretch(3, "blue", "square")], seed=1, **size
    )
    write_stretches(folder / "b.mkv", [Stretch(2), Stretch(4, "yellow", "cross")], seed=2, **size)
    write_stretches(folder / "c.avi", [Stretch(5, "green", "triangle")], seed=3, **size)
    write_stretches(folder / "d.mp4", [Stretch(3, "red", "square")], seed=4, **size)
    questions = [
        ("q1", "a.mp4", "a red circle"),
        ("q2", "b.mkv", "a yellow cross"),
        ("q3", "a.mp4", "a blue square"),
        ("q4", "c.avi", "a green triangle"),
        ("q5", "d.mp4", "a red square"),
        ("q6", "b.mkv", "a blue circle"),
    ]
    (folder / "questions.jsonl").write_text(
        "".join(json.dumps({"id": i, "video": v, "question": q}) + "\n" for i, v, q in questions)
    )
    return layout


def test_keyframes_on_a_ray_pool_equal_in_process(ray_cluster, tmp_path, s3_root, monkeypatch):  # noqa: F811
    """Both keyframe stages on the two nodes: frames decoded by CPU tasks, CLIP on the actors
    (loaded once each, never on the driver), the choice per video on CPU tasks. The same frames,
    scores, JPEGs and quarantined video as the in-process stages on a local root. video_keyframes
    runs over a local root, uniform_keyframes over an object store (moto's S3): there the tasks
    read the jobs and write the candidates and the chosen frames under the root's URI, the step
    publishes the frames under the keys the rows name before the manifests; no scratch is left."""
    import ray

    from assets.multimodal import raw_videos, uniform_keyframes, video_keyframes
    from refinery.fs import join, listing
    from refinery.models import loads
    from refinery.multimodal.video_synth import Stretch, write_stretches
    from refinery.object_storage import ObjectStorage
    from refinery.paths import STORAGE_ROOT_ENV
    from refinery.storage import Storage
    from resources.clip import ClipResource
    from tests.dagster.test_multimodal_assets import require_tiny_clip

    require_tiny_clip()
    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    from refinery.paths import Layout

    homes = {"ray": _video_home(tmp_path, "ray"), "local": Layout.at(tmp_path / "local")}
    shutil.copytree(homes["ray"].inbox_source("video", SOURCE), homes["local"].inbox_source("video", SOURCE))
    root = with_credentials(s3_root)
    on_s3 = {uniform_keyframes}  # the ray home's keyframe stages over S3 (the others on its local root)
    monkeypatch.setenv(STORAGE_ROOT_ENV, root)
    _materialize(raw_videos, homes["ray"], {"kind": "local"}, None, "video_source")
    monkeypatch.delenv(STORAGE_ROOT_ENV)
    store = ObjectStorage(root)
    for home in homes.values():
        _materialize(raw_videos, home, {"kind": "local"}, None, "video_source")
        # changed after ingest: quarantined by the keyframe stages, not misread
        changed = home.inbox_source("video", SOURCE) / "d.mp4"
        if home is homes["ray"]:
            write_stretches(changed, [Stretch(2, "blue", "cross")], fps=4, width=64, height=48, seed=9)
        else:
            shutil.copyfile(homes["ray"].inbox_source("video", SOURCE) / "d.mp4", changed)
    compute = _pool_compute()
    configs = {video_keyframes: {"k": 2, "min_gap_seconds": 1.5}, uniform_keyframes: {"k": 3}}
    before = loads.counts()
    metas = {}
    try:
        for asset, config in configs.items():
            if asset in on_s3:
                monkeypatch.setenv(STORAGE_ROOT_ENV, root)
            metas[asset] = _materialize(
                asset, homes["ray"], _ray_engine(address), config, "video_source",
                compute=compute, clip=ClipResource(compute=compute),
            )  # fmt: skip
            monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    finally:
        ray.shutdown()
        monkeypatch.delenv(STORAGE_ROOT_ENV, raising=False)
    for i, meta in enumerate(metas.values()):
        pool = _check_loads(meta, before, warm=i > 0)  # uniform_keyframes: on warm workers
        assert pool["slices"] == 4 and pool["batches"] == 4 and pool["batch_size"] == 1, pool
    for asset, config in configs.items():
        local = _materialize(
            asset,
            homes["local"],
            {"kind": "local"},
            config,
            "video_source",
            clip=ClipResource(compute=compute),
        )
        meta = metas[asset]
        name = asset.key.path[-1]
        for key in (
            "model",
            "frames_in_videos",
            "frames_converted",
            "frames_decoded_estimated",
            "frames_written",
        ):
            assert meta[key].value == local[key].value, key
        # the same report on both, apart from how the model ran
        assert set(local) - set(meta) == {"dataloader_workers"}
        assert set(meta) - set(local) <= {"engine", "ray_actors", "num_gpus"}
        if name == "video_keyframes":
            for key in ("mean_score_selected", "mean_score_uniform_same_k"):
                assert meta[key].value == pytest.approx(local[key].value, abs=1e-4), key
        if asset in on_s3:
            kept, rejected = store.read(name, SOURCE), store.read(name, SOURCE, rejected=True)
        else:
            kept, rejected = _frames(homes["ray"], name)
        want_kept, want_rejected = _frames(homes["local"], name)
        assert kept["id"].tolist() == want_kept["id"].tolist() == ["q1", "q2", "q3", "q4", "q6"]
        for column in ("frame_indices", "timestamps", "frame_paths"):
            assert [list(v) for v in kept[column]] == [list(v) for v in want_kept[column]], column
        for column in ("frames_decoded", "frames_converted", "method"):
            assert kept[column].tolist() == want_kept[column].tolist(), column
        for got, want in zip(kept["scores"], want_kept["scores"], strict=True):
            np.testing.assert_allclose(got, want, atol=1e-5)
        assert rejected["id"].tolist() == ["q5"] and rejected["reason"].tolist() == ["video_changed"]
        assert (
            rejected["reason_detail"].str.replace(str(homes["ray"].home), "").tolist()
            == want_rejected["reason_detail"].str.replace(str(homes["local"].home), "").tolist()
        )
        jpegs = {
            key: {
                p.relative_to(Storage(home.storage).root).as_posix(): p.read_bytes()
                for p in (home.storage / name / SOURCE).rglob("*.jpg")
            }
            for key, home in homes.items()
        }
        if asset in on_s3:  # the frames under the keys the rows name; the folder holds no others
            assert not jpegs["ray"]
            for info in listing(store.fs, join(store.base, name, SOURCE), recursive=True):
                if info.base_name.endswith(".jpg"):
                    with store.fs.open_input_stream(info.path) as handle:
                        jpegs["ray"][info.path[len(store.base) + 1 :]] = handle.read()
        named = {p for paths in kept["frame_paths"] for p in paths}
        assert set(jpegs["ray"]) == named
        assert jpegs["ray"] == jpegs["local"] and len(jpegs["ray"]) == meta["frames_written"].value > 0
    assert not list((homes["ray"].storage / ".model_pool").glob("*"))  # the scratch is gone
    scratch = [f"{store.base}/{top}" for top in ("_work", "_staging", ".model_pool")]
    assert [i.path for top in scratch
            for i in store.fs.get_file_info(pafs.FileSelector(top, allow_not_found=True, recursive=True))
            if i.type == pafs.FileType.File] == []  # fmt: skip


def _cores_seen() -> tuple[int, int]:
    from refinery.models.onnx_embedder import ray_assigned_cpus, usable_cores

    return usable_cores(), ray_assigned_cpus()


def test_a_one_cpu_task_runs_the_embedder_on_one_core(ray_cluster, monkeypatch):  # noqa: F811
    """Ray sets no CPU affinity: a task of one CPU must size the embedder's threads (texts side by
    side, ORT's intra-op threads) from what Ray assigned it, or every task on a node takes all cores."""
    import ray

    from refinery.models.onnx_embedder import ray_assigned_cpus

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    ray.init(address=address, log_to_driver=False)
    try:
        assert ray_assigned_cpus() == 0  # the driver: not a task
        assert ray.get(ray.remote(num_cpus=1)(_cores_seen).remote()) == (1, 1)
        assert ray.get(ray.remote(num_cpus=0.5)(_cores_seen).remote()) == (1, 1)
    finally:
        ray.shutdown()
