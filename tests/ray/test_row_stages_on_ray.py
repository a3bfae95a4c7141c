"""Row stages on the loopback two-node cluster without gathering a partition in the step, and a
retried step that skips the slices already written.

- perplexity_scored (bucket_reference 'corpus') on the ray engine: each document scored once, on
  the workers; the parts' quantile sketches give the cut-offs; the output equals the local
  engine's row for row (scores, buckets, reasons, provenance).
- a parallel stage failing once on its last slice with a transient error: Dagster retries the
  step, the retry processes only the slices the first attempt did not finish, and the output
  equals a clean run's.

- clip_filtered in both modes on the same homes: threshold mode's slices on the workers, and
  top_fraction's exact ranks from per-slice sketches and a range shuffle run as Ray tasks; rows,
  ranks, reasons and the contact sheets equal the local engine's.

(fuzzy_deduplicated's signatures, written by the workers and streamed by the claimer, are compared
with the local engine's by test_ray_cluster.py's chain test.)
"""

from __future__ import annotations

import random
import time

import dagster as dg
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery import names
from refinery.manifest import read_manifest
from refinery.paths import Layout
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample
from refinery.storage import Storage
from resources import EngineResource
from tests.conftest import write_source
from tests.dagster.conftest import jsonl, resources_for
from tests.ray.test_ray_cluster import ray_cluster  # noqa: F401  (the two-node cluster, per module)

pytestmark = pytest.mark.ray


def ray_engine(address: str, slice_rows: int) -> EngineResource:
    return EngineResource(kind="ray", address=address, node_ip_address="127.0.0.1", slice_rows=slice_rows)


def crawl(n: int = 60) -> pd.DataFrame:
    """Prose and junk, so the perplexities spread over decades and the buckets cut something."""
    rng = random.Random(7)
    makers = [prose.boilerplate_page, prose.keyword_spam, prose.bullet_dump, prose.short_stub]
    texts = [
        prose.article(rng, rng.choice(["history", "travel", "cooking"]), paragraphs=rng.randint(1, 4))
        if i % 3
        else makers[i % 4](rng)
        for i in range(n)
    ]
    return pd.DataFrame({"id": [f"c{i:03d}" for i in range(n)], "text": texts})


def scored_pairs(n: int = 60) -> pa.Table:
    """clip_scored's output as clip_filtered reads it: tiny images, cosines with ties (two decimals)."""
    import io

    from PIL import Image

    rng = random.Random(11)
    images = []
    for i in range(n):
        buffer = io.BytesIO()
        Image.new("RGB", (8, 8), (i * 4 % 256, 90, 255 - i * 4 % 256)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    cosine = [round(rng.uniform(-0.1, 0.6), 2) for _ in range(n)]
    ids = [f"p{i:03d}" for i in rng.sample(range(n), n)]
    return pa.table(
        {
            "id": ids,
            "caption": [f"a picture number {i}" for i in range(n)],
            "image": pa.array(images, pa.binary()),
            "clip_cosine": pa.array(cosine, pa.float32()),
            "clip_score": pa.array([2.5 * max(c, 0) for c in cosine], pa.float32()),
        }
    )


CLIP_MODES = {"threshold": {"threshold": 0.3}, "top_fraction": {"mode": "top_fraction", "top_fraction": 0.4}}
CLIP_SAME_METADATA = ("mode", "cosine_cutoff", "contact_sheet", "rows_in", "rows_out", "rows_rejected")


def clip_filtered_runs(instance, home: Layout, resources: dict) -> dict:
    """clip_filtered over six slices in each mode: (kept, rejected, metadata) per mode."""
    from assets.multimodal import clip_filtered

    path = Storage(home.storage).path(names.CLIP_SCORED, "pairs")
    path.parent.mkdir(parents=True)
    pq.write_table(scored_pairs(), path, row_group_size=10)
    runs = {}
    for mode, options in CLIP_MODES.items():
        result = dg.materialize(
            [clip_filtered],
            partition_key="pairs",
            instance=instance,
            resources=resources,
            run_config={"ops": {names.CLIP_FILTERED: {"config": options}}},
        )
        assert result.success
        meta = result.asset_materializations_for_node(names.CLIP_FILTERED)[0].metadata
        runs[mode] = (*outputs(Storage(home.storage), names.CLIP_FILTERED, "pairs"), meta)
    return runs


def outputs(storage: Storage, stage: str, source: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    return storage.read(stage, source), storage.read(stage, source, rejected=True)


def test_perplexity_scored_once_on_workers_equals_local(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    import ray

    from assets.text_models import reference_lm
    from assets.text_stages import perplexity_scored

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    homes = {kind: Layout.at(tmp_path / kind) for kind in ("local", "ray")}
    table = pa.Table.from_pandas(crawl(), preserve_index=False)
    # bucket_relative_accuracy off its default (0.001), through Dagster: both engines cut from it.
    options = {"drop_buckets": ["tail"], "bucket_relative_accuracy": 0.005}
    config = {"ops": {names.PERPLEXITY_SCORED: {"config": options}}}
    results, clip = {}, {}
    monkeypatch.setattr("refinery.multimodal.clip_rank.RANK_ROWS_PER_REDUCER", 15)  # four cosine ranges
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["crawl"])
        instance.add_dynamic_partitions("image_text_source", ["pairs"])
        for kind, home in homes.items():
            build_reference_sample(home.inbox_kind("reference"))
            path = Storage(home.storage).path(names.FUZZY_DEDUPLICATED, "crawl")
            path.parent.mkdir(parents=True)
            pq.write_table(table, path, row_group_size=10)  # six slices of ten rows
            assert dg.materialize([reference_lm], instance=instance, resources=resources_for(home)).success
            engine = {} if kind == "local" else {"engine": ray_engine(address, 10)}
            try:
                results[kind] = dg.materialize(
                    [perplexity_scored],
                    partition_key="crawl",
                    instance=instance,
                    resources=resources_for(home, **engine),
                    run_config=config,
                )
                clip[kind] = clip_filtered_runs(instance, home, resources_for(home, **engine))
            finally:
                ray.shutdown()
            assert results[kind].success
    local, on_ray = (Storage(homes[k].storage) for k in ("local", "ray"))
    ray_frames, local_frames = (outputs(s, names.PERPLEXITY_SCORED, "crawl") for s in (on_ray, local))
    for got, want in zip(ray_frames, local_frames, strict=True):
        pd.testing.assert_frame_equal(got, want)
    kept, rejected = outputs(on_ray, names.PERPLEXITY_SCORED, "crawl")
    assert set(kept["perplexity_bucket"]) == {"head", "middle"} and len(rejected) >= 20
    assert (rejected["reason"] == "perplexity.tail").all()
    stamps = [s.provenance(names.PERPLEXITY_SCORED, "crawl") for s in (on_ray, local)]
    for stamp in stamps:
        stamp["model"].pop("path")  # each home has its model (the same bytes: the sha256 stays)
    assert stamps[0] == stamps[1]
    meta = {
        k: r.asset_materializations_for_node(names.PERPLEXITY_SCORED)[0].metadata for k, r in results.items()
    }
    first = meta["ray"]["first_pass"].value
    assert first["where"] == "ray" and first["parts"] == 6 and first["reused_from_an_earlier_attempt"] == 0
    assert meta["local"]["first_pass"].value["where"] == "this process"
    # scored once: the deciding pass read every score back, on the workers and in process
    assert first["scored_again"] == 0 and meta["local"]["first_pass"].value["scored_again"] == 0
    assert meta["ray"]["engine"].value["slices"] == 6
    assert meta["ray"]["bucket_cutoffs"].value == meta["local"]["bucket_cutoffs"].value
    assert (
        "quantile sketch, cut-offs within 0.50% of the exact percentiles"
        in meta["ray"]["bucket_cutoffs"].value
    )
    assert "relative accuracy 0.005" in first["sketch"]
    assert not list((homes["ray"].storage / "_staging").rglob("*.parquet"))  # the scores are gone
    # clip_filtered: equal rows, ranks, reasons and report in both modes; top_fraction's ranks are
    # those of one sort by (cosine desc, id), and the ranking ran on the workers (staging removed)
    for mode in CLIP_MODES:
        for got, want in zip(clip["ray"][mode][:2], clip["local"][mode][:2], strict=True):
            pd.testing.assert_frame_equal(got, want)
        for name in CLIP_SAME_METADATA:
            assert clip["ray"][mode][2][name] == clip["local"][mode][2][name], (mode, name)
        assert clip["ray"][mode][2]["engine"].value["slices"] == 6
    kept, rejected, meta = clip["ray"]["top_fraction"]
    ranked = pd.concat([kept, rejected]).sort_values(["clip_cosine", "id"], ascending=[False, True])
    assert list(ranked["clip_rank"]) == list(range(1, 61)) and len(kept) == 24
    assert (
        meta["top_fraction_ranking"].value["where"] == "ray"
        and meta["top_fraction_ranking"].value["ranges"] >= 3
    )
    assert (
        clip["ray"]["threshold"][0]["clip_cosine"].min() >= 0.3
        and clip["ray"]["threshold"][1]["clip_rank"].isna().all()
    )
    assert not list((homes["ray"].storage / "_staging").rglob("*.parquet"))  # the ranks are gone


def test_a_retried_step_processes_only_the_slices_not_yet_written(ray_cluster, tmp_path, monkeypatch):  # noqa: F811
    import ray

    from assets import raw_documents
    from tests.ray.flaky_stage import flaky_copy

    address, _ = ray_cluster
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    texts = [f"Document {i} says {'a few words ' * (i % 5)}and ends." for i in range(24)]
    outputs_of = {}
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("text_source", ["many"])
        for kind in ("clean", "flaky"):
            home = Layout.at(tmp_path / kind)
            write_source(
                home, "many", {"d.jsonl": jsonl({"id": f"d{i:02d}", "text": t} for i, t in enumerate(texts))}
            )
            markers = tmp_path / f"markers-{kind}"
            markers.mkdir()
            ingest = {"ops": {names.RAW_DOCUMENTS: {"config": {"batch_rows": 3}}}}  # 8 row groups
            assert dg.materialize(
                [raw_documents], partition_key="many", instance=instance, resources=resources_for(home),
                run_config=ingest,
            ).success  # fmt: skip
            fail_id = "d22" if kind == "flaky" else ""  # in the last slice
            config = {"ops": {"flaky_copy": {"config": {"markers": str(markers), "fail_id": fail_id}}}}
            started = time.time_ns()
            try:
                result = dg.materialize(
                    [flaky_copy],
                    partition_key="many",
                    instance=instance,
                    resources=resources_for(home, engine=ray_engine(address, 3)),
                    run_config=config,
                )
            finally:
                ray.shutdown()
            assert result.success
            outputs_of[kind] = outputs(Storage(home.storage), "flaky_copy", "many")
            # The workers' parts are sealed with a manifest; its hash is the version Dagster records.
            manifest = read_manifest(Storage(home.storage).parts_path("flaky_copy", "many"))
            recorded = [
                e.materialization.tags["dagster/data_version"]
                for e in result.get_asset_materialization_events()
            ]
            assert manifest["rows"] == len(outputs_of[kind][0]) and recorded == [manifest["version"]]
            engine = Storage(home.storage).read_stats("flaky_copy")["many"]["engine"]
            retries = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY)
            retried_at = [entry.timestamp for entry in retries]
            starts = sorted(
                (int(p.name.split("-")[0]), p.name.split("-", 2)[2])
                for p in markers.iterdir()
                if p.name[0].isdigit()
            )
            assert all(ns >= started for ns, _ in starts)
        assert engine["slices"] == 8
    # the clean run: no retry, every slice once
    # the flaky run: one retry; what the retry started is exactly what the first attempt left undone
    assert len(retried_at) == 1, retried_at
    boundary = int(retried_at[0] * 1e9)
    first_attempt = [first for ns, first in starts if ns < boundary]
    retry = [first for ns, first in starts if ns >= boundary]
    slices = {f"d{3 * i:02d}" for i in range(8)}
    assert "d21" in first_attempt and "d21" in retry  # the failing slice, started in both
    assert len(retry) == len(set(retry)) == engine["slices_processed"], (first_attempt, retry, engine)
    assert engine["slices_reused"] == 8 - engine["slices_processed"] >= 1
    assert set(retry) | set(first_attempt) == slices
    for got, want in zip(outputs_of["flaky"], outputs_of["clean"], strict=True):
        pd.testing.assert_frame_equal(got, want)
    assert len(outputs_of["flaky"][1]) > 0  # some rows were rejected, with their reasons
