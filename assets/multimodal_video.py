"""raw_videos → video_keyframes (query-based) and uniform_keyframes (the baseline), per source.

One row per question. The keyframe assets write the chosen frames as JPEG files under
storage/<asset>/<source>/<video_id>/ (replaced as a whole when the step succeeds) and, in the
Parquet output, the frame indices, timestamps, CLIP scores and paths as lists, in time order.
Both use the clip resource, so they run in the ``gpu`` pool with the Kubernetes GPU request.
"""

import dagster as dg
import numpy as np

from assets.gpu import gpu_asset_kwargs
from assets.metadata import inbox_metadata, materialize_stage, provenance, stage_family
from assets.partitions import video_source
from refinery import markdown
from refinery.ingest.stage import ingest_with_reader
from refinery.multimodal.keyframes import (
    FrameStore,
    KeyframeAttach,
    KeyframeParams,
    KeyframePass,
    UniformParams,
    keyframe_pass,
)
from refinery.multimodal.preview import frame_strip, markdown_image
from refinery.multimodal.schema import KEYFRAME_FIELDS, QUESTION_COLUMN
from refinery.multimodal.video_reader import VideoIngestParams, VideoReaderSource
from refinery.stage import run_stage
from resources import RefineryHome
from resources.clip import ClipResource

INBOX_KIND = "video"
GROUP = "video"
RAW, QUERY, UNIFORM = "raw_videos", "video_keyframes", "uniform_keyframes"
INDEX_COLUMNS = ["id", "question", "video_file", "video_id", "video_bytes", "frames", "fps"]


stage = stage_family(video_source, GROUP, text_column=QUESTION_COLUMN)


class VideoIngestConfig(dg.Config, VideoIngestParams):
    pass


class KeyframeConfig(dg.Config, KeyframeParams):
    pass


class UniformConfig(dg.Config, UniformParams):
    pass


@stage(
    RAW,
    description="Questions about videos from $REFINERY_HOME/inbox/video/<source>/: videos (mp4, avi, "
    "mkv, webm) and questions tables (JSONL/CSV/TSV/Parquet: video, question, optional answer and id), one "
    "row per question. Each video is opened with decord and its first and last frames decoded; rows refer "
    "to the file in the inbox by path, size and content hash. Missing, empty and undecodable videos, videos "
    "without questions, malformed or empty questions are quarantined in storage/rejected/raw_videos.",
)
def raw_videos(context: dg.AssetExecutionContext, config: VideoIngestConfig, refinery: RefineryHome):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = VideoIngestParams(**config.model_dump())
    folder = layout.inbox_source(INBOX_KIND, source)
    reader = VideoReaderSource(folder, source, params)
    run = ingest_with_reader(reader, storage, RAW, provenance(RAW, source, params))
    videos = [
        (rel, p.frames, round(p.fps, 3), round(p.duration, 2), f"{p.width}×{p.height}", p.size)
        for rel, p in sorted(reader.probes.items())
    ]
    broken = [(rel, reason, detail[:120]) for rel, (reason, detail) in sorted(reader.broken.items())]
    run.stats.extra["videos"] = len(videos)
    run.stats.extra["broken_videos"] = len(broken)
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=run.stats.rows_in,
        params=params,
        score_columns=["video_file", "duration"],
        extra={
            **inbox_metadata(context, run, folder),
            "videos": dg.MetadataValue.md(
                markdown.table(["video", "frames", "fps", "seconds", "size", "bytes"], videos)
                if videos
                else "_none_"
            ),
            "undecodable_videos": dg.MetadataValue.md(
                markdown.table(["video", "reason", "detail"], broken) if broken else "_none_"
            ),
        },
        text_column=QUESTION_COLUMN,
    )


def _strip(plan: KeyframePass, store: FrameStore, rows, samples: int) -> dg.MetadataValue:
    shown = []
    for qid, question, video_file in rows[["id", "question", "video_file"]].itertuples(index=False):
        found = plan.results.get(qid)
        if found is None:
            continue
        frames = [
            (store.open(path), f"{t:.1f}s · {s:.2f}")
            for path, t, s in zip(found.frame_paths, found.timestamps, found.scores, strict=True)
        ]
        shown.append((f"{video_file}: {question}", frames))
        if len(shown) == samples:
            break
    if not shown:
        return dg.MetadataValue.md("_no frames_")
    return dg.MetadataValue.md(markdown_image(frame_strip(shown), "selected frames per question"))


def _video_table(plan: KeyframePass) -> dg.MetadataValue:
    rows = [
        (
            v.video_file,
            v.questions,
            v.frames,
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
        "frames decoded",
        "share",
        "decode s",
        "embed s",
        "total s",
    ]
    return dg.MetadataValue.md(markdown.table(headers, rows) if rows else "_no videos_")


def _materialize_keyframes(
    context: dg.AssetExecutionContext,
    refinery: RefineryHome,
    clip: ClipResource,
    asset: str,
    method: str,
    params: KeyframeParams | UniformParams,
) -> dg.MaterializeResult:
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    model = clip.load()
    workers = clip.dataloader_workers()
    rows = storage.read(RAW, source, columns=INDEX_COLUMNS)
    store = FrameStore(storage.root, asset, source)
    try:
        plan = keyframe_pass(
            rows, layout.inbox_source(INBOX_KIND, source), model, store, method, params, workers
        )
        stamp = provenance(asset, source, params)
        stamp["clip_model"] = model.name
        run = run_stage(
            storage,
            RAW,
            asset,
            source,
            KeyframeAttach(plan),
            KEYFRAME_FIELDS,
            stamp,
            text_column=QUESTION_COLUMN,
        )
        strip = _strip(plan, store, rows, params.strip_samples)
        store.commit()
    except BaseException:
        store.abort()
        raise
    frames = sum(v.frames for v in plan.videos.values())
    decoded = sum(v.decoded for v in plan.videos.values())
    per_video = [v.total_seconds for v in plan.videos.values()]
    run.stats.extra.update(frames_in_videos=frames, frames_decoded=decoded, frames_written=store.written)
    extra = {
        "model": model.name,
        "device": model.device,
        "dataloader_workers": workers,
        "frames_in_videos": frames,
        "frames_decoded": decoded,
        "decoded_fraction": round(decoded / frames, 4) if frames else 0.0,
        "frames_written": store.written,
        "seconds_per_video": round(float(np.mean(per_video)), 3) if per_video else 0.0,
        "videos": _video_table(plan),
        "frame_strip": strip,
        "frames_folder": dg.MetadataValue.path(str(store.final)),
    }
    if method == "query":
        extra["mean_score_selected"] = round(plan.selected_mean_score, 4) if per_video else 0.0
        extra["mean_score_uniform_same_k"] = round(plan.uniform_mean_score, 4) if per_video else 0.0
    context.log.info(
        f"{asset}[{source}]: {len(plan.videos)} videos, {decoded} of {frames} frames decoded "
        f"in {plan.seconds:.2f}s"
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(RAW, source),
        params=params,
        score_columns=["video_file", "timestamps", "scores"],
        extra=extra,
        text_column=QUESTION_COLUMN,
    )


@stage(
    QUERY,
    kinds={"pytorch"},
    deps=[raw_videos],
    description="For each question, the k frames most similar to it under CLIP, spread in time: "
    "candidates every 1/sample_fps seconds decoded with decord's get_batch (never the whole video), embedded "
    "with the clip resource together with the question, then greedy temporal NMS (no two picks closer than "
    "min_gap_seconds). Frames are JPEGs under storage/video_keyframes/<source>/; the row lists indices, "
    "timestamps, scores and paths.",
    **gpu_asset_kwargs(),
)
def video_keyframes(
    context: dg.AssetExecutionContext, config: KeyframeConfig, refinery: RefineryHome, clip: ClipResource
):
    params = KeyframeParams(**config.model_dump())
    return _materialize_keyframes(context, refinery, clip, QUERY, "query", params)


@stage(
    UNIFORM,
    kinds={"pytorch"},
    deps=[raw_videos],
    description="The baseline for video_keyframes: the same k frames per question at the centres of k equal "
    "slices of the video (only those k decoded), scored against the question with the clip resource for "
    "comparison. Same layout: JPEGs under storage/uniform_keyframes/<source>/ and one row per question.",
    **gpu_asset_kwargs(),
)
def uniform_keyframes(
    context: dg.AssetExecutionContext, config: UniformConfig, refinery: RefineryHome, clip: ClipResource
):
    params = UniformParams(**config.model_dump())
    return _materialize_keyframes(context, refinery, clip, UNIFORM, "uniform", params)
