"""The real multimodal assets under materialize(), with real resources on a temporary home: the image–text
chain and the keyframe assets on the generated sample with the project's trained tiny CLIP (matched
captions must score above mismatched ones; keyframes for "a red circle" must come from the stretch that
shows it), and a random-weight CLIP loaded from a state-dict file through the resource."""

import base64
import io
import itertools
import json
import re

import dagster as dg
import decord
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from assets.multimodal import (
    clip_filtered,
    clip_scored,
    image_text_checked,
    raw_image_text,
    raw_videos,
    uniform_keyframes,
    video_keyframes,
)
from refinery.multimodal import tiny_clip_train
from refinery.multimodal.clip_model import tiny_clip_missing_message
from refinery.multimodal.images import decode_rgb
from refinery.multimodal.keyframes import candidate_indices, frames_decoded_by_seeking
from refinery.multimodal.tiny_clip_train import roc_auc
from refinery.multimodal.video_synth import Stretch, write_stretches
from refinery.paths import Layout
from refinery.sample.multimodal_sample import (
    IMAGE_TEXT_SOURCES,
    RED_CIRCLE_SECONDS,
    build_image_text_sample,
    build_video_sample,
)
from refinery.storage import Storage
from resources import ComputeResource, build_resources
from resources.clip import ClipResource

IMAGE_TEXT = [raw_image_text, image_text_checked, clip_scored, clip_filtered]
IMAGE_STAGES = ["raw_image_text", "image_text_checked", "clip_scored", "clip_filtered"]
VIDEO = [raw_videos, video_keyframes, uniform_keyframes]
KEYFRAMES = {"k": 3, "min_gap_seconds": 1.0, "sample_fps": 2.0}


def require_tiny_clip() -> None:
    folder = tiny_clip_train.default_checkpoint_dir()
    if not tiny_clip_train.is_built(folder):
        pytest.fail(tiny_clip_missing_message(folder), pytrace=False)


def resources(layout, clip: ClipResource | None = None) -> dict:
    return build_resources(
        "local", home=str(layout.home), device="cpu", batch_size=16, dataloader_workers=2, clip=clip
    )


def materialize(instance, layout, assets, partitions, key, run_config=None, clip=None, **kwargs):
    if key not in instance.get_dynamic_partitions(partitions):
        instance.add_dynamic_partitions(partitions, [key])
    return dg.materialize(
        assets,
        partition_key=key,
        instance=instance,
        resources=resources(layout, clip),
        run_config=run_config,
        **kwargs,
    )


def metadata(result, asset):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )


def embedded_png(markdown_value: str) -> Image.Image:
    found = re.search(r"data:image/png;base64,([A-Za-z0-9+/=]+)\)", markdown_value)
    assert found, markdown_value[:200]
    data = base64.b64decode(found.group(1))
    assert len(data) < 150_000  # a thumbnail, not a payload
    return Image.open(io.BytesIO(data))


@pytest.fixture(scope="module")
def sample(tmp_path_factory):
    """The generated sample, materialized once with the tiny CLIP (image–text and video)."""
    require_tiny_clip()
    layout = Layout.at(tmp_path_factory.mktemp("multimodal") / "home")
    build_image_text_sample(layout.inbox_kind("image_text"), seed=5, pairs=24)
    build_video_sample(layout.inbox_kind("video"), seed=5)
    video_config = {
        "ops": {"video_keyframes": {"config": KEYFRAMES}, "uniform_keyframes": {"config": {"k": 3}}}
    }
    with dg.instance_for_test() as instance:
        image_runs = {
            s: materialize(instance, layout, IMAGE_TEXT, "image_text_source", s) for s in IMAGE_TEXT_SOURCES
        }
        video_run = materialize(instance, layout, VIDEO, "video_source", "clips", video_config)
        yield layout, instance, image_runs, video_run


def test_image_text_chain_accounts_for_every_pair(sample):
    layout, _, runs, _ = sample
    storage = Storage(layout.storage)
    reasons: set[str] = set()
    for source, result in runs.items():
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3 * len(IMAGE_STAGES) and all(c.passed for c in checks), source
        for upstream, stage in itertools.pairwise(IMAGE_STAGES):
            kept, removed = storage.row_count(stage, source), storage.row_count(stage, source, rejected=True)
            assert storage.row_count(upstream, source) == kept + removed, (source, stage)
        for stage in IMAGE_STAGES:
            reasons |= set(storage.read(stage, source, rejected=True, columns=["reason"])["reason"])
    assert reasons >= {
        "truncated_image",
        "empty_file",
        "unreadable_image",
        "missing_caption",
        "image_not_found",
        "malformed_json",
        "unsupported_file_type",
        "corrupt_archive",
        "missing_image",
        "image.too_small",
        "image.aspect_ratio",
        "image.blank",
        "caption.file_name",
        "caption.placeholder",
        "caption.not_english",
        "clip.below_threshold",
    }
    raw = storage.read("raw_image_text", "shapes")
    original = (layout.inbox_source("image_text", "shapes") / raw["image_file"].iloc[0]).read_bytes()
    assert raw["image"].iloc[0] == original  # rows carry the original bytes


def test_matched_captions_score_above_mismatched(sample):
    layout, _, runs, _ = sample
    storage = Storage(layout.storage)
    scored = storage.read("clip_scored", "shapes", columns=["meta", "clip_cosine", "clip_score"])
    matched = scored["meta"].map(lambda m: json.loads(m)["matched"]).to_numpy(dtype=bool)
    cosine = scored["clip_cosine"].to_numpy()
    assert matched.sum() >= 10 and (~matched).sum() >= 3
    assert roc_auc(cosine[matched], cosine[~matched]) >= 0.9
    assert np.median(cosine[matched]) > np.median(cosine[~matched]) + 0.3
    np.testing.assert_allclose(scored["clip_score"], 2.5 * np.maximum(cosine, 0), atol=1e-6)
    meta = metadata(runs["shapes"], "clip_scored")
    sheet = embedded_png(meta["contact_sheet"].value)
    assert sheet.width > 300 and sheet.height > 200
    assert "distribution_clip_cosine" in meta and meta["model"].value.startswith("tiny-clip@")


def test_default_filter_uses_the_models_calibrated_cut(sample):
    """LAION's 0.28 is a ViT-B-32 figure; the tiny CLIP brings its own cut, which removes mismatches."""
    from refinery.multimodal.clip_model import calibrated_threshold
    from refinery.multimodal.tiny_clip_train import WEIGHTS_FILE, default_checkpoint_dir

    layout, _, runs, _ = sample
    storage = Storage(layout.storage)
    cut = calibrated_threshold(default_checkpoint_dir() / WEIGHTS_FILE)
    assert cut is not None and cut > 0.28
    assert metadata(runs["shapes"], "clip_filtered")["cosine_cutoff"].value == cut
    kept = storage.read("clip_filtered", "shapes", columns=["meta", "clip_cosine"])
    removed = storage.read("clip_filtered", "shapes", rejected=True, columns=["meta", "reason"])
    kept_matched = kept["meta"].map(lambda m: json.loads(m)["matched"])
    removed_matched = removed["meta"].map(lambda m: json.loads(m)["matched"])
    assert (kept["clip_cosine"] >= cut).all()
    assert kept_matched.mean() > 0.9 and (~removed_matched[removed["reason"] == "clip.below_threshold"]).any()


def test_top_fraction_keeps_the_best_share(sample):
    layout, instance, _, _ = sample
    storage = Storage(layout.storage)
    config = {"ops": {"clip_filtered": {"config": {"mode": "top_fraction", "top_fraction": 0.5}}}}
    result = materialize(instance, layout, [clip_filtered], "image_text_source", "shards", config)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    kept = storage.read("clip_filtered", "shards", columns=["id", "clip_cosine", "clip_rank"])
    removed = storage.read("clip_filtered", "shards", rejected=True, columns=["clip_cosine", "reason"])
    total = storage.row_count("clip_scored", "shards")
    assert len(kept) == round(0.5 * total) and sorted(kept["clip_rank"]) == list(range(1, len(kept) + 1))
    assert kept["clip_cosine"].min() >= removed["clip_cosine"].max()
    assert set(removed["reason"]) == {"clip.not_in_top_fraction"}
    embedded_png(metadata(result, "clip_filtered")["contact_sheet"].value)


def test_rerunning_on_unchanged_input_gives_identical_files(sample):
    layout, instance, _, _ = sample
    storage = Storage(layout.storage)
    before = storage.path("raw_image_text", "tables").read_bytes()
    assert materialize(instance, layout, [raw_image_text], "image_text_source", "tables").success
    assert storage.path("raw_image_text", "tables").read_bytes() == before
    frames = sorted((layout.storage / "video_keyframes" / "clips").rglob("*.jpg"))
    index, jpegs = storage.path("video_keyframes", "clips").read_bytes(), [p.read_bytes() for p in frames]
    config = {"ops": {"video_keyframes": {"config": KEYFRAMES}}}
    assert materialize(instance, layout, [video_keyframes], "video_source", "clips", config).success
    assert storage.path("video_keyframes", "clips").read_bytes() == index
    assert sorted((layout.storage / "video_keyframes" / "clips").rglob("*.jpg")) == frames
    assert [p.read_bytes() for p in frames] == jpegs


def test_video_keyframes_come_from_the_stretch_that_shows_the_query(sample):
    layout, _, _, result = sample
    storage = Storage(layout.storage)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    for stage in ("video_keyframes", "uniform_keyframes"):
        assert storage.row_count("raw_videos", "clips") == storage.row_count(
            stage, "clips"
        ) + storage.row_count(stage, "clips", rejected=True)
    quarantined = set(storage.read("raw_videos", "clips", rejected=True)["reason"])
    assert quarantined == {
        "undecodable_video",
        "video_not_found",
        "missing_question",
        "video_without_questions",
    }
    rows = storage.read("video_keyframes", "clips").set_index("id")
    red = rows.loc["q-red"]
    lo, hi = RED_CIRCLE_SECONDS
    assert len(red["timestamps"]) == KEYFRAMES["k"]
    assert all(lo <= t < hi for t in red["timestamps"]), red["timestamps"]
    assert np.all(np.diff(red["timestamps"]) >= KEYFRAMES["min_gap_seconds"])
    assert all(t >= 8.0 for t in rows.loc["q-green", "timestamps"])  # the green triangle: the last stretch
    assert all(t < 4.0 for t in rows.loc["q-blue", "timestamps"])  # the blue square: the first
    # Candidates every 1/sample_fps s are converted; the decoder decodes from the keyframe before each
    # (this clip has keyframes at 0 and 80 of 120 frames: nearly all of it), as decord's index says.
    video = rows.loc["q-red"]
    raw = storage.read("raw_videos", "clips").set_index("id").loc["q-red"]
    candidates = candidate_indices(int(raw["frames"]), float(raw["fps"]), KEYFRAMES["sample_fps"], 600)
    reader = decord.VideoReader(str(layout.inbox_source("video", "clips") / raw["video_file"]))
    keys = reader.get_key_indices()
    assert video["frames_converted"] == len(candidates) < 0.25 * raw["frames"]
    assert video["frames_decoded"] == frames_decoded_by_seeking(candidates, keys, len(reader))
    assert list(keys) == [0, 80] and video["frames_decoded"] == 76 + 36  # frames 0-75, then 80-115
    for path, index in zip(red["frame_paths"], red["frame_indices"], strict=True):
        frame = Image.open(layout.storage / path)
        assert frame.size == (160, 120) and path.endswith(f"{index:06d}.jpg")
        pixels = np.asarray(frame.convert("RGB"), dtype=int)
        assert (
            (pixels[..., 0] > 150) & (pixels[..., 1] < 90) & (pixels[..., 2] < 90)
        ).sum() > 50  # red shows
    uniform = storage.read("uniform_keyframes", "clips").set_index("id").loc["q-red"]
    assert len(uniform["frame_indices"]) == 3 and np.mean(red["scores"]) > np.mean(uniform["scores"])
    meta = metadata(result, "video_keyframes")
    assert (
        meta["frames_converted"].value
        < meta["frames_decoded_estimated"].value
        < meta["frames_in_videos"].value
    )
    assert "clip_model_warning" not in meta  # the generated sample is the tiny CLIP's own kind of data
    strip = embedded_png(meta["frame_strip"].value)
    assert strip.width >= 3 * 60
    index = pq.read_table(storage.path("video_keyframes", "clips")).schema
    assert {"frame_indices", "timestamps", "scores", "frame_paths"} <= set(index.names)


def test_a_video_changed_after_ingest_is_rejected_not_misread(home):
    require_tiny_clip()
    folder = home.inbox_source("video", "edits")
    write_stretches(folder / "v.mp4", [Stretch(2, "red", "circle"), Stretch(2)], fps=5, width=64, height=48)
    (folder / "q.jsonl").write_text(
        json.dumps({"id": "q1", "video": "v.mp4", "question": "a red circle"}) + "\n"
    )
    storage = Storage(home.storage)
    with dg.instance_for_test() as instance:
        assert materialize(instance, home, [raw_videos], "video_source", "edits").success
        write_stretches(folder / "v.mp4", [Stretch(4, "blue", "square")], fps=5, width=64, height=48)
        result = materialize(instance, home, [video_keyframes], "video_source", "edits")
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    rejected = storage.read("video_keyframes", "edits", rejected=True)
    assert (
        rejected["reason"].tolist() == ["video_changed"]
        and storage.row_count("video_keyframes", "edits") == 0
    )


def test_random_weight_clip_from_a_state_dict_file_scores_like_a_direct_forward(home, tmp_path):
    """The path a real checkpoint takes: architecture JSON + weights file, through the resource."""
    config = tiny_clip_train.TinyClipConfig(
        embed_dim=32, vision_width=32, vision_head_width=16, text_width=32
    )
    torch.manual_seed(7)
    model = tiny_clip_train.build_model(config).eval()
    weights, arch = tmp_path / "random.pt", tmp_path / "arch.json"
    torch.save(model.state_dict(), weights)
    arch.write_text(json.dumps(config.model_cfg()))
    build_image_text_sample(home.inbox_kind("image_text"), seed=9, pairs=12)
    clip = ClipResource(
        model_name=str(arch),
        checkpoint=str(weights),
        compute=ComputeResource(device="cpu", batch_size=5, dataloader_workers=2),
    )
    with dg.instance_for_test() as instance:
        result = materialize(instance, home, IMAGE_TEXT[:3], "image_text_source", "tables", clip=clip)
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    scored = Storage(home.storage).read("clip_scored", "tables")
    loaded = clip.load()
    with torch.no_grad():
        pixels = torch.stack([loaded.preprocess(decode_rgb(b)) for b in scored["image"]])
        a = model.encode_image(pixels, normalize=True)
        b = model.encode_text(loaded.tokenize(scored["caption"].tolist()), normalize=True)
    np.testing.assert_allclose(scored["clip_cosine"], (a * b).sum(1).numpy(), atol=1e-5)
    assert metadata(result, "clip_scored")["model"].value == f"arch @ {weights}"


def test_a_missing_checkpoint_fails_the_step_with_the_file_named(home, tmp_path):
    build_image_text_sample(home.inbox_kind("image_text"), seed=9, pairs=8)
    missing = tmp_path / "ViT-B-32.pt"
    clip = ClipResource(
        model_name="ViT-B-32-quickgelu", checkpoint=str(missing), compute=ComputeResource(device="cpu")
    )
    with dg.instance_for_test() as instance:
        result = materialize(
            instance, home, IMAGE_TEXT[:3], "image_text_source", "tables", clip=clip, raise_on_error=False
        )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert str(missing) in failure.event_specific_data.error.cause.message
    assert "never downloaded" in failure.event_specific_data.error.cause.message
