"""What the keyframe stages report about decoding, on videos encoded with known keyframe intervals,
and the sample_fps edge cases: 0 or less is refused, at or above the frame rate means every frame."""

import json

import imageio_ffmpeg
import numpy as np
import pandas as pd
import pytest
import torch
from pydantic import ValidationError

from refinery.multimodal import tiny_clip_train
from refinery.multimodal.clip_model import load_clip
from refinery.multimodal.keyframe_report import keyframe_report
from refinery.multimodal.keyframes import (
    FrameStore,
    KeyframeAttach,
    KeyframeParams,
    VideoFrames,
    VideoJob,
    candidate_indices,
    frames_decoded_by_seeking,
    keyframe_pass,
)
from refinery.multimodal.video_reader import file_digest, open_video
from refinery.multimodal.video_synth import Stretch, video_frames

SMALL = tiny_clip_train.TinyClipConfig(
    embed_dim=32, vision_width=32, vision_head_width=16, text_width=32, text_heads=2, steps=1
)


def encode(path, n=60, fps=10, gop=None):
    """A 64x48 H.264 clip; ``gop`` fixes the keyframe interval (None: x264's default, 250)."""
    frames = video_frames([Stretch(n / fps, "red", "circle")], fps, 64, 48, seed=1)
    params = ["-g", str(gop), "-sc_threshold", "0"] if gop else []
    writer = imageio_ffmpeg.write_frames(
        str(path), (64, 48), fps=fps, codec="libx264", output_params=params, ffmpeg_log_level="error"
    )
    writer.send(None)
    for frame in frames:
        writer.send(np.ascontiguousarray(frame).tobytes())
    writer.close()
    return path


def test_decord_seek_rule_replayed_on_the_keyframe_index():
    # One keyframe group: decoded straight through to the last target.
    assert frames_decoded_by_seeking([0, 5, 10, 15], [0], 100) == 16
    # Every frame a keyframe: each target alone.
    assert frames_decoded_by_seeking([0, 5, 10, 15], range(100), 100) == 4
    # Groups at 0, 50, 100: 0..10, seek to 50 and 50..60, then 61..70 in the same group, seek to 100..120.
    assert frames_decoded_by_seeking([10, 60, 70, 120], [0, 50, 100], 150) == 11 + 11 + 10 + 21
    # A target behind the reader: back to its keyframe.
    assert frames_decoded_by_seeking([60, 10], [0, 50], 100) == 11 + 11
    assert frames_decoded_by_seeking([], [0], 10) == 0


@pytest.mark.parametrize(("gop", "keys", "decoded"), [(1, 60, 6), (20, 3, 33), (None, 1, 51)])
def test_the_worker_reports_converted_and_decoded_frames_of_a_real_video(tmp_path, gop, keys, decoded):
    """60 frames at 10 fps, candidates at 1 per second (0, 10, …, 50): 6 converted; decoded 6 when
    every frame is a keyframe; with groups of 20, 0..10, 20..30, 40..50 (33); with x264's default
    single group, 0..50 straight through (51)."""
    path = encode(tmp_path / "v.mp4", gop=gop)
    reader = open_video(path)
    assert len(reader.get_key_indices()) == keys
    del reader
    job = VideoJob(str(path), file_digest(path), path.stat().st_size, 60, 10.0)
    item = VideoFrames([job], lambda im: torch.zeros(3, 8, 8), 8, "query", KeyframeParams())[0]
    assert item["error"] is None and item["indices"] == [0, 10, 20, 30, 40, 50]
    assert item["keyframes"] == keys and item["decoded"] == decoded


def test_sample_fps_must_be_positive_and_at_the_frame_rate_means_every_frame():
    for bad in (0, -1.0):
        with pytest.raises(ValidationError, match="greater than 0"):
            KeyframeParams(sample_fps=bad)
        with pytest.raises(ValueError, match="sample_fps must be positive"):
            candidate_indices(100, 25.0, bad, 1000)
    assert candidate_indices(50, 25.0, 25.0, 1000).tolist() == list(range(50))
    assert candidate_indices(50, 25.0, 60.0, 1000).tolist() == list(range(50))
    assert len(candidate_indices(50, 25.0, 60.0, 20)) == 20  # max_candidates still caps


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny_clip_train checkpoint (random weights): what the domain warning recognises."""
    torch.manual_seed(0)
    folder = tiny_clip_train.save(
        tiny_clip_train.build_model(SMALL).eval(),
        {"roc_auc": 0.5},
        SMALL,
        tmp_path_factory.mktemp("clip") / "tiny",
    )
    assert "config_hash" in json.loads((folder / tiny_clip_train.EVAL_FILE).read_text())
    return load_clip(checkpoint=str(folder), device="cpu", batch_size=8)


def test_every_frame_candidates_and_out_of_domain_questions_are_reported(tiny, tmp_path):
    folder = tmp_path / "inbox"
    folder.mkdir()
    path = encode(folder / "v.mp4", n=20, fps=10)
    rows = pd.DataFrame(
        {
            "id": ["q1", "q2"],
            "question": ["a red circle", "a man walking a dog on the beach"],
            "video_file": ["v.mp4"] * 2,
            "video_id": [file_digest(path)] * 2,
            "video_bytes": [path.stat().st_size] * 2,
            "frames": [20] * 2,
            "fps": [10.0] * 2,
        }
    )
    params = KeyframeParams(k=2, sample_fps=30.0, min_gap_seconds=0.5)
    with FrameStore(tmp_path / "storage", "video_keyframes", "s") as store:
        plan = keyframe_pass(rows, folder, tiny, store, "query", params, workers=0)
        attach = KeyframeAttach(plan, store, rows, 1)
        report = keyframe_report(attach)
        one_fps = keyframe_pass(rows.iloc[:1], folder, tiny, store, "query", KeyframeParams(k=1), workers=0)
    stats = plan.videos["v.mp4"]
    assert stats.every_frame and stats.converted == stats.candidates == 20 and stats.decoded == 20
    assert plan.every_frame_videos == ["v.mp4"]
    assert "every frame of v.mp4 was a candidate" in report["every_frame_a_candidate"].text
    assert attach.summary()["every_frame_a_candidate"] == ["v.mp4"]
    assert report["frames_converted"] == 20 and report["frames_decoded_estimated"] == 20
    # One question of two is not the generator's kind: below 90%, so the tiny CLIP says so.
    assert "1 of 2 questions" in plan.domain_warning and "ViT-B-32-quickgelu" in plan.domain_warning
    assert "Warning" in report["clip_model_warning"].text
    assert one_fps.domain_warning is None and not one_fps.every_frame_videos
