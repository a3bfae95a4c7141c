"""The video stages, one spec each (one ``video_source`` partition per source), one row per question.

The keyframe stages write the chosen frames as JPEG files under storage/<asset>/<source>/<video_id>/
(replaced as a whole when the step succeeds) and, in the Parquet output, the frame indices,
timestamps, CLIP scores and paths as lists, in time order.
"""

from __future__ import annotations

from refinery import names
from refinery.kernel.pipeline import chain
from refinery.kernel.spec import StageSpec
from refinery.multimodal.keyframes import DECODE_FIELDS, KeyframeParams, UniformParams
from refinery.multimodal.schema import KEYFRAME_FIELDS, QUESTION_COLUMN
from refinery.multimodal.video_reader import VideoIngestParams

RAW_VIDEOS = StageSpec(
    name=names.RAW_VIDEOS,
    kind="video",
    params=VideoIngestParams,
    text_column=QUESTION_COLUMN,
    score_columns=("video_file", "duration"),
    description="Questions about videos from $REFINERY_HOME/inbox/video/<source>/: videos (mp4, avi, "
    "mkv, webm) and questions tables (JSONL/CSV/TSV/Parquet: video, question, optional answer and id), one "
    "row per question. Each video is opened with decord and its first and last frames decoded; rows refer "
    "to the file in the inbox by path, size and content hash. Missing, empty and undecodable videos, videos "
    "without questions, malformed or empty questions are quarantined in storage/rejected/raw_videos.",
)

VIDEO_KEYFRAMES = StageSpec(
    name=names.VIDEO_KEYFRAMES,
    kind="video",
    params=KeyframeParams,
    fields=(*KEYFRAME_FIELDS, *DECODE_FIELDS),
    score_columns=("video_file", "timestamps", "scores"),
    text_column=QUESTION_COLUMN,
    kinds=frozenset({"pytorch"}),
    description="For each question, the k frames most similar to it under CLIP, spread in time: "
    "candidates every 1/sample_fps seconds (every frame when sample_fps reaches the video's frame rate) "
    "fetched with decord's get_batch, which converts only the candidates but decodes from the keyframe "
    "before each one (frames_converted and frames_decoded, the latter from the keyframe index: the whole "
    "video when it has a single keyframe), embedded with the clip resource together with the question, "
    "then greedy temporal NMS (no two picks closer than min_gap_seconds). Frames are JPEGs under "
    "storage/video_keyframes/<source>/; the row lists indices, timestamps, scores and paths.",
)

UNIFORM_KEYFRAMES = StageSpec(
    name=names.UNIFORM_KEYFRAMES,
    kind="video",
    upstream=names.RAW_VIDEOS,  # beside video_keyframes: the baseline reads the same rows
    params=UniformParams,
    fields=(*KEYFRAME_FIELDS, *DECODE_FIELDS),
    score_columns=("video_file", "timestamps", "scores"),
    text_column=QUESTION_COLUMN,
    kinds=frozenset({"pytorch"}),
    description="The baseline for video_keyframes: the same k frames per question at the centres of k equal "
    "slices of the video (only those k converted; the decoder still decodes from the keyframe before each), "
    "scored against the question with the clip resource for comparison. Same layout: JPEGs under "
    "storage/uniform_keyframes/<source>/ and one row per question.",
)

# The video pipeline, in order (refinery.kernel.pipeline).
STAGES = chain(RAW_VIDEOS, VIDEO_KEYFRAMES, UNIFORM_KEYFRAMES)
