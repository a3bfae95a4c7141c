"""Every option of the video stages (``raw_videos`` → ``video_keyframes`` / ``uniform_keyframes``),
through Dagster's ``materialize``, on the generated video sample with the project's tiny CLIP: one
materialization with every option off its default, then what each did to the rows and the frames."""

from __future__ import annotations

import itertools
import json

import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.multimodal import raw_videos, uniform_keyframes, video_keyframes
from refinery.multimodal.keyframes import KeyframeParams, UniformParams, candidate_indices
from refinery.multimodal.video_reader import VideoIngestParams
from refinery.paths import Layout
from refinery.sample.multimodal_sample import build_video_sample
from refinery.storage import Storage
from tests.dagster.test_multimodal_assets import require_tiny_clip, resources

RAW = {"max_question_chars": 14, "min_frames": 100, "batch_rows": 2}
KEYFRAMES = {
    "k": 2,
    "sample_fps": 2.0,
    "max_candidates": 10,
    "min_gap_seconds": 3.0,
    "min_score": 0.1,
    "query_template": "a photo of {question}",
    "jpeg_quality": 40,
    "frame_max_side": 64,
    "decode_chunk": 4,
    "strip_samples": 1,
}
UNIFORM = {
    "k": 3,
    "query_template": "a picture of {question}",
    "jpeg_quality": 40,
    "frame_max_side": 48,
    "decode_chunk": 2,
    "strip_samples": 1,
}
OPTIONS = {"raw_videos": [RAW], "video_keyframes": [KEYFRAMES], "uniform_keyframes": [UNIFORM]}
PARAMS = {
    "raw_videos": VideoIngestParams,
    "video_keyframes": KeyframeParams,
    "uniform_keyframes": UniformParams,
}


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    require_tiny_clip()
    layout = Layout.at(tmp_path_factory.mktemp("video-options") / "home")
    build_video_sample(layout.inbox_kind("video"), seed=5)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("video_source", ["clips"])
        result = dg.materialize(
            [raw_videos, video_keyframes, uniform_keyframes],
            partition_key="clips",
            instance=instance,
            resources=resources(layout),
            run_config={"ops": {name: {"config": options[0]} for name, options in OPTIONS.items()}},
        )
        assert result.success
        yield Storage(layout.storage), result


def test_options_are_recorded(video):
    storage, _ = video
    for stage, (options,) in OPTIONS.items():
        stamp = storage.provenance(stage, "clips")["params"]
        expected = json.loads(json.dumps(PARAMS[stage](**options).model_dump()))
        assert {k: stamp[k] for k in options} == {k: expected[k] for k in options}, stage


def test_raw_video_limits(video):
    storage, _ = video
    kept = storage.read("raw_videos", "clips")
    quarantined = storage.read("raw_videos", "clips", rejected=True)
    assert len(kept) > 0 and (kept["question"].str.len() <= 14).all() and (kept["frames"] >= 100).all()
    details = " ".join(quarantined["reason_detail"].astype(str))
    assert "max_question_chars 14" in details and "100" in details


def _frames_of(storage, rows) -> list[Image.Image]:
    return [Image.open(storage.root / p) for paths in rows["frame_paths"] for p in paths]


def test_keyframe_options(video):
    storage, _ = video
    rows = storage.read("video_keyframes", "clips")
    assert len(rows) > 0
    for indices, times, scores, frames, fps in zip(
        rows["frame_indices"], rows["timestamps"], rows["scores"], rows["frames"], rows["fps"], strict=True
    ):
        candidates = candidate_indices(frames, fps, 2.0, 10)  # sample_fps 2, max_candidates 10
        assert len(candidates) <= 10 and len(candidates) < len(candidate_indices(frames, fps, 2.0, 600))
        assert len(indices) <= 2 and set(indices) <= set(candidates)  # k
        assert all(b - a >= 3.0 - 1e-6 for a, b in itertools.pairwise(sorted(times)))  # min_gap_seconds
        assert all(s >= 0.1 for s in scores)  # min_score
    assert any(len(i) == 2 for i in rows["frame_indices"])
    for image in _frames_of(storage, rows):  # frame_max_side 64; jpeg_quality 40 (coarse quantization)
        assert max(image.size) <= 64 and image.quantization[0][0] >= 10


def test_uniform_options(video):
    storage, _ = video
    rows = storage.read("uniform_keyframes", "clips")
    assert len(rows) > 0
    for indices, frames in zip(rows["frame_indices"], rows["frames"], strict=True):
        assert len(indices) == 3
        gaps = np.diff(indices)
        assert gaps.max() - gaps.min() <= 1 and indices[-1] < frames  # evenly spaced
    for image in _frames_of(storage, rows):
        assert max(image.size) <= 48 and image.quantization[0][0] >= 10
