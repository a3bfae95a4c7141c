"""Every option of the image–text stages (``raw_image_text`` → ``image_text_checked`` →
``clip_scored`` → ``clip_filtered``, and ``image_vector_index``), through Dagster's ``materialize``,
on the generated sample (tables, WebDataset shards and shape pictures) with the project's tiny CLIP.

Two rounds on two sources, every option off its default in one of them; each round checks the
provenance records the options and what they did: limits hold on every kept row and the rejections
name the rule, the keep rules cut where they say."""

from __future__ import annotations

import json
import math

import dagster as dg
import pytest

from assets.multimodal import clip_filtered, clip_scored, image_text_checked, raw_image_text
from assets.retrieval import clip_embeddings, image_vector_index
from refinery.multimodal.clip_score import ClipFilterParams, ClipScoreParams
from refinery.multimodal.image_text_check import ImageTextCheckParams
from refinery.multimodal.image_text_reader import ImageTextIngestParams
from refinery.paths import Layout
from refinery.sample.multimodal_sample import build_image_text_sample
from refinery.storage import Storage
from tests.dagster.test_model_stage_options import INDEX
from tests.dagster.test_multimodal_assets import require_tiny_clip, resources

CHAIN = [raw_image_text, image_text_checked, clip_scored, clip_filtered]
PARAMS = {
    "raw_image_text": ImageTextIngestParams,
    "image_text_checked": ImageTextCheckParams,
    "clip_scored": ClipScoreParams,
    "clip_filtered": ClipFilterParams,
}
ROUNDS: dict[str, dict] = {
    "shapes": {
        "raw_image_text": {"max_caption_chars": 45, "max_image_pixels": 25_000, "batch_rows": 4},
        "image_text_checked": {
            "min_side": 100,
            "max_aspect_ratio": 1.2,
            "min_pixel_std": 30.0,
            "min_caption_words": 4,
            "max_caption_words": 8,
            "fix_unicode": False,
            "redact_pii": ["email"],
        },
        "clip_scored": {"batch_rows": 5, "contact_sheet_pairs": 2},
        "clip_filtered": {
            "mode": "top_fraction",
            "top_fraction": 0.5,
            "batch_rows": 3,
            "contact_sheet_pairs": 2,
        },
    },
    "tables": {
        "raw_image_text": {"max_image_bytes": 3_000},
        "image_text_checked": {
            "min_avg_word_length": 4.0,
            "max_avg_word_length": 6.0,
            "max_symbol_ratio": 0.0,
            "min_alpha_words_ratio": 0.95,
            "max_repeated_word_ratio": 0.1,
            "min_english_word_fraction": 0.3,
            "english_gate_min_words": 3,
        },
        "clip_filtered": {"threshold": 0.5},
    },
}
CLIP = {"checkpoint": "<the tiny CLIP's weights file>", "model_name": "<its config JSON>"}
CLIP_TAG = {
    "pretrained": "openai",
    "cache_dir": "<an empty cache>",
    "model_name": "ViT-B-32",
    "checkpoint": "",
}
OPTIONS = {"image_vector_index": [INDEX], "clip": [CLIP, CLIP_TAG], "compute": [{"dataloader_workers": 0}]}


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    require_tiny_clip()
    layout = Layout.at(tmp_path_factory.mktemp("image-text-options") / "home")
    build_image_text_sample(layout.inbox_kind("image_text"), seed=5, pairs=24)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("image_text_source", list(ROUNDS))
        for source, plan in ROUNDS.items():
            run_config = {"ops": {stage: {"config": options} for stage, options in plan.items()}}
            result = dg.materialize(
                CHAIN,
                partition_key=source,
                instance=instance,
                resources=resources(layout),
                run_config=run_config,
            )
            assert result.success, source
        yield layout, instance, Storage(layout.storage)


@pytest.mark.parametrize("source", list(ROUNDS))
def test_options_are_recorded(rounds, source):
    storage = rounds[2]
    for stage, options in ROUNDS[source].items():
        stamp = storage.provenance(stage, source)["params"]
        expected = json.loads(json.dumps(PARAMS[stage](**options).model_dump()))
        assert {k: stamp[k] for k in options} == {k: expected[k] for k in options}, stage


def test_shapes_limits(rounds):
    storage = rounds[2]
    raw = storage.read("raw_image_text", "shapes")
    quarantined = storage.read("raw_image_text", "shapes", rejected=True)
    assert (raw["caption"].str.len() <= 45).all() and (raw["width"] * raw["height"] <= 25_000).all()
    details = " ".join(quarantined["reason_detail"].astype(str))
    assert "max_caption_chars 45" in details and "25000" in details
    kept = storage.read("image_text_checked", "shapes")
    rejected = storage.read("image_text_checked", "shapes", rejected=True)
    assert (kept[["width", "height"]].min(axis=1) >= 100).all() and (kept["aspect_ratio"] <= 1.2).all()
    assert (kept["pixel_std"] >= 30).all() and kept["caption_words"].between(4, 8).all()
    assert {"image.too_small", "image.blank", "caption.too_many_words"} <= set(rejected["reason"])
    # top_fraction 0.5: the better half by cosine, ties by id
    scored = storage.read("clip_scored", "shapes")
    kept = storage.read("clip_filtered", "shapes")
    dropped = storage.read("clip_filtered", "shapes", rejected=True)
    assert len(kept) == math.ceil(0.5 * len(scored)) or len(kept) == round(0.5 * len(scored))
    assert kept["clip_cosine"].min() >= dropped["clip_cosine"].max()


def test_tables_limits(rounds):
    storage = rounds[2]
    quarantined = storage.read("raw_image_text", "tables", rejected=True)
    assert "oversized_image" in set(quarantined["reason"])
    rejected = storage.read("image_text_checked", "tables", rejected=True)
    assert len(rejected) > 0 and rejected["reason"].str.startswith("caption.").all()  # the defaults: none
    kept = storage.read("clip_filtered", "tables")
    dropped = storage.read("clip_filtered", "tables", rejected=True)
    assert (kept["clip_cosine"] >= 0.5).all() and (dropped["clip_cosine"] < 0.5).all()


def _meta(result, asset):
    (event,) = result.asset_materializations_for_node(asset)
    return {k: getattr(v, "value", v) for k, v in event.metadata.items()}


def test_image_vector_index_options(rounds):
    layout, instance, _ = rounds

    def index(config=None):
        result = dg.materialize(
            [clip_embeddings, image_vector_index],
            partition_key="shapes",
            instance=instance,
            resources=resources(layout),
            run_config={"ops": {"image_vector_index": {"config": config or {}}}},
        )
        assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
        return _meta(result, "image_vector_index")

    base, chosen = index(), index(INDEX)
    assert chosen["parameters"] == INDEX | {k: v for k, v in chosen["parameters"].items() if k not in INDEX}
    assert chosen["images_disk_bytes"] < base["images_disk_bytes"]


def test_clip_resource_options(rounds, tmp_path):
    """checkpoint and model_name: the tiny CLIP's weights file with its config JSON scores as the
    bundled name does; pretrained and cache_dir: a tag that is not in the cache is refused (nothing is
    downloaded), naming the cache it searched."""
    from refinery.multimodal import tiny_clip_train
    from resources.clip import ClipResource

    layout, instance, storage = rounds
    before = storage.read("clip_scored", "tables").set_index("id")["clip_cosine"]
    compute = resources(layout)["clip"].compute
    folder = tiny_clip_train.default_checkpoint_dir()
    weights = next(folder.glob("*.safetensors"))
    by_file = ClipResource(
        compute=compute, checkpoint=str(weights), model_name=str(folder / "open_clip_config.json")
    )
    result = dg.materialize(
        [clip_scored],
        partition_key="tables",
        instance=instance,
        resources={**resources(layout), "clip": by_file},
    )
    assert result.success
    after = storage.read("clip_scored", "tables").set_index("id")["clip_cosine"]
    assert (after.loc[before.index] - before).abs().max() < 1e-5
    cache = tmp_path / "open_clip_cache"
    cache.mkdir()
    tag = ClipResource(
        compute=compute, checkpoint="", model_name="ViT-B-32", pretrained="openai", cache_dir=str(cache)
    )
    refused = dg.materialize(
        [clip_scored],
        partition_key="tables",
        instance=instance,
        resources={**resources(layout), "clip": tag},
        raise_on_error=False,
    )
    errors = " ".join(
        e.event_specific_data.error.to_string() for e in refused.all_events if e.is_step_failure
    )
    assert not refused.success and str(cache) in errors


def test_dataloader_workers_decode_in_that_many_processes(rounds):
    """compute.dataloader_workers: 0 decodes the images in the step's own process, 2 in two worker
    processes (batches of 2, so there is a batch for each); the scores are the same either way,
    and the metadata says how many worker processes decoded (the default-config source
    ``shards``, whose pairs the rounds' filters do not thin out)."""
    from resources import build_resources

    layout, instance, storage = rounds
    if "shards" not in instance.get_dynamic_partitions("image_text_source"):
        instance.add_dynamic_partitions("image_text_source", ["shards"])
    upstream = [raw_image_text, image_text_checked]
    assert dg.materialize(
        upstream, partition_key="shards", instance=instance, resources=resources(layout)
    ).success

    def scored(workers: int) -> tuple[dict, object]:
        compute = build_resources(
            "local", home=str(layout.home), device="cpu", batch_size=2, dataloader_workers=workers
        )
        result = dg.materialize([clip_scored], partition_key="shards", instance=instance, resources=compute)
        assert result.success
        cosine = storage.read("clip_scored", "shards").set_index("id")["clip_cosine"]
        return _meta(result, "clip_scored"), cosine

    (in_step, none), (in_workers, two) = scored(0), scored(2)
    assert len(none) > 4  # more than two batches of 2
    assert (in_step["dataloader_workers"], in_step["decode_processes"]) == (0, 0)
    assert (in_workers["dataloader_workers"], in_workers["decode_processes"]) == (2, 2)
    assert none.index.equals(two.index) and (none - two).abs().max() < 1e-6
