"""What the keyframe stages show: per-video decode and embed costs, and a strip of picks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np

from refinery import markdown
from refinery.metadata import FilePath, Markdown
from refinery.multimodal.preview import frame_strip, markdown_image


class KeyframePass(Protocol):
    """What the report reads of a keyframe pass (:class:`refinery.multimodal.keyframes.KeyframePass`;
    stated here so the report needs nothing from that module)."""

    videos: Mapping[str, Any]  # video file -> its VideoStats
    results: Mapping[str, Any]  # question id -> its QuestionResult
    every_frame_videos: list[str]
    domain_warning: str | None
    method: str
    selected_mean_score: float
    uniform_mean_score: float


class KeyframeAttach(Protocol):
    """What the report reads of the keyframe stage's processor
    (:class:`refinery.multimodal.keyframes.KeyframeAttach`)."""

    plan: KeyframePass
    store: Any  # the FrameStore, or None
    rows: Any  # the partition's rows (a DataFrame), or None
    strip_samples: int
    model_info: dict


def keyframe_report(attach: KeyframeAttach) -> dict:
    """``frames_converted``: the candidates get_batch returned as pixels; ``frames_decoded_estimated``:
    what the decoder decoded to reach them, from each video's keyframe index (see keyframes.py)."""
    plan, store = attach.plan, attach.store
    frames = sum(v.frames for v in plan.videos.values())
    decoded = sum(v.decoded for v in plan.videos.values())
    converted = sum(v.converted for v in plan.videos.values())
    per_video = [v.total_seconds for v in plan.videos.values()]
    out = {
        **attach.model_info,
        "frames_in_videos": frames,
        "frames_converted": converted,
        "frames_decoded_estimated": decoded,
        "decoded_fraction": round(decoded / frames, 4) if frames else 0.0,
        "frames_written": store.written if store else 0,
        "seconds_per_video": round(float(np.mean(per_video)), 3) if per_video else 0.0,
        "videos": video_table(plan),
        "frame_strip": strip(attach),
    }
    if store is not None:
        out["frames_folder"] = FilePath.of(store.final)
    if plan.every_frame_videos:
        out["every_frame_a_candidate"] = Markdown(every_frame_note(plan))
    if plan.domain_warning:
        out["clip_model_warning"] = Markdown(f"**Warning.** {plan.domain_warning}")
    if plan.method == "query":
        out["mean_score_selected"] = round(plan.selected_mean_score, 4) if per_video else 0.0
        out["mean_score_uniform_same_k"] = round(plan.uniform_mean_score, 4) if per_video else 0.0
    return out


def every_frame_note(plan: KeyframePass) -> str:
    """Videos whose frame rate sample_fps reached: every frame was a candidate, all decoded."""
    names = plan.every_frame_videos
    return (
        f"sample_fps is at or above the frame rate of {len(names)} video(s): every frame of "
        f"{', '.join(names[:10])}{' …' if len(names) > 10 else ''} was a candidate (decoded, converted and "
        "embedded); lower sample_fps to sample them."
    )


def strip(attach: KeyframeAttach) -> Markdown:
    """The chosen frames of the first few questions, with their times and scores."""
    plan, store, rows = attach.plan, attach.store, attach.rows
    shown = []
    if store is not None and rows is not None:
        for qid, question, video_file in rows[["id", "question", "video_file"]].itertuples(index=False):
            found = plan.results.get(qid)
            if found is None:
                continue
            frames = [
                (store.open(path), f"{t:.1f}s · {s:.2f}")
                for path, t, s in zip(found.frame_paths, found.timestamps, found.scores, strict=True)
            ]
            shown.append((f"{video_file}: {question}", frames))
            if len(shown) == attach.strip_samples:
                break
    if not shown:
        return Markdown("_no frames_")
    return Markdown(markdown_image(frame_strip(shown), "selected frames per question"))


def video_table(plan: KeyframePass) -> Markdown:
    rows = [
        (
            v.video_file,
            v.questions,
            v.frames,
            v.keyframes,
            v.converted,
            v.decoded,
            f"{v.decoded / v.frames:.1%}" if v.frames else "",
            round(v.decode_seconds, 3),
            round(v.embed_seconds, 3),
            round(v.total_seconds, 3),
        )
        for v in plan.videos.values()
    ]
    headers = [
        "video",
        "questions",
        "frames in video",
        "keyframes",
        "frames converted",
        "frames decoded (est.)",
        "decoded share",
        "decode s",
        "embed s",
        "total s",
    ]
    return Markdown(markdown.table(headers, rows) if rows else "_no videos_")
