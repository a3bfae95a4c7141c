"""Image–text pairs and video keyframes, per source: each stage is its library spec, wired here.

clip_scored and the keyframe stages use the clip resource, so they run in the ``gpu`` pool with the
Kubernetes GPU request (assets/gpu.py); on a machine without a GPU they run on the CPU (compute
``device: auto``). On the Ray engine they run on pools of CLIP actors (refinery/multimodal/
clip_pool.py, keyframe_pool.py), with the images and frames decoded by CPU tasks ahead of them.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from assets.factory import ingest_asset, stage_asset
from refinery import names
from refinery.batch import BatchProcessor, bound
from refinery.engine.model_pool import ModelStage
from refinery.engine.model_stages import PooledStage, execute_model_stage
from refinery.kernel.spec import StageContext
from refinery.multimodal.clip_filter_stage import clip_filter_processor
from refinery.multimodal.clip_model import calibrated_threshold, trained_on_generated_scenes
from refinery.multimodal.clip_pool import (
    PoolReport,
    attach_slice,
    decode_images,
    describe_clip,
    load_clip_model,
    score_pairs,
)
from refinery.multimodal.clip_score import ScoreAttacher, domain_info
from refinery.multimodal.image_text_check import check_batch
from refinery.multimodal.image_text_reader import ImageTextReader
from refinery.multimodal.keyframe_pool import execute_keyframes
from refinery.multimodal.keyframe_report import every_frame_note
from refinery.multimodal.keyframes import KeyframeAttach, keyframe_pass
from refinery.multimodal.object_root import frame_store, local_partition
from refinery.multimodal.video_reader import VideoReaderSource
from refinery.stages import image_text, video
from refinery.table_store import is_object

VIDEO_INDEX_COLUMNS = ["id", "question", "video_file", "video_id", "video_bytes", "frames", "fps"]


@contextmanager
def _clip_scores(run: StageContext) -> Iterator[BatchProcessor]:
    """CLIP reads the upstream partition by path (DataLoader workers): on an object-store root, from
    a local copy staged for the stage (refinery/multimodal/object_root.py)."""
    clip = run.resources.clip
    model = clip.load()
    with local_partition(run.storage, run.spec.upstream, run.source) as path:
        yield _scored(run, clip, model, path)


def _scored(run: StageContext, clip, model, path) -> BatchProcessor:
    attach = ScoreAttacher.score(path, model, clip.dataloader_workers(), run.params)
    run.provenance.update(clip_model=model.name, clip_threshold=model.threshold)
    if attach.warning:  # the tiny CLIP on data it was not trained on: clip_filtered repeats it
        run.log.warning(attach.warning)
        run.provenance["clip_model_warning"] = attach.warning
    s = attach.scores
    run.log.info(
        f"{run.spec.name}[{run.source}]: {len(s.cosine)} pairs in {s.seconds:.2f}s "
        f"({s.pairs_per_second:.1f} pairs/s, {s.encode_seconds:.2f}s in CLIP) on {model.device}, "
        f"images decoded by {s.decode_processes or 'the step itself, no'} DataLoader worker process(es)"
    )
    return attach


def _clip_pool(run: StageContext) -> PooledStage:
    """clip_scored on a Ray actor pool: the driver resolves the weights' files (never loads them),
    decode tasks preprocess the images, the CLIP actors score, CPU tasks attach and write. On an
    object store root the tasks and actors read the upstream parts and write theirs through the
    root's URI (refinery/engine/model_stages.py); the driver streams the caption column alone."""
    clip = run.resources.clip
    source = clip.source()
    run.provenance.update(clip_model=source.name, clip_threshold=calibrated_threshold(source.weights))
    path = run.storage.require(run.spec.upstream, run.source)
    if is_object(run.storage):  # the committed parts, read through the root's filesystem
        path = [str(f) for f in run.storage.files(run.spec.upstream, run.source)]
    synthetic = trained_on_generated_scenes(source.weights)
    domain, warning = domain_info(run.spec.name, path, synthetic, filesystem=run.storage.fs)
    if warning:
        run.log.warning(warning)
        run.provenance["clip_model_warning"] = warning
    model = ModelStage(
        ["image", "caption"],
        load=partial(load_clip_model, clip),
        infer=score_pairs,
        decode=partial(decode_images, source),
        describe=describe_clip,
    )
    pairs = run.params.contact_sheet_pairs
    return PooledStage(
        model=model,
        attach=partial(attach_slice, pairs),
        report=lambda described: PoolReport(pairs, domain, described),
        pool=clip.compute.model_pool(),
    )


@contextmanager
def _keyframes(run: StageContext, method: str) -> Iterator[BatchProcessor]:
    clip = run.resources.clip
    model, workers = clip.load(), clip.dataloader_workers()
    rows = run.storage.read(names.RAW_VIDEOS, run.source, columns=VIDEO_INDEX_COLUMNS)
    folder = run.layout.inbox_source(run.spec.kind, run.source)
    with frame_store(run.storage, run.spec.name, run.source) as store:  # uploaded on an object store
        plan = keyframe_pass(rows, folder, model, store, method, run.params, workers)
        run.provenance["clip_model"] = model.name
        if plan.domain_warning:
            run.log.warning(plan.domain_warning)
        if plan.every_frame_videos:
            run.log.info(every_frame_note(plan))
        info = {"model": model.name, "device": model.device, "dataloader_workers": plan.workers}
        yield KeyframeAttach(plan, store, rows, run.params.strip_samples, info)
    frames = sum(v.frames for v in plan.videos.values())
    decoded = sum(v.decoded for v in plan.videos.values())
    converted = sum(v.converted for v in plan.videos.values())
    run.log.info(
        f"{run.spec.name}[{run.source}]: {len(plan.videos)} videos, {converted} candidate frames converted, "
        f"about {decoded} of {frames} frames decoded to reach them, in {plan.seconds:.2f}s"
    )


raw_image_text = ingest_asset(image_text.RAW_IMAGE_TEXT, ImageTextReader)
image_text_checked = stage_asset(image_text.IMAGE_TEXT_CHECKED, lambda run: bound(check_batch, run.params))
clip_scored = stage_asset(
    image_text.CLIP_SCORED,
    _clip_scores,
    resources=["clip"],
    gpu=True,
    execute=partial(execute_model_stage, plan=_clip_pool),
)
clip_filtered = stage_asset(image_text.CLIP_FILTERED, clip_filter_processor)

raw_videos = ingest_asset(video.RAW_VIDEOS, VideoReaderSource)
video_keyframes = stage_asset(
    video.VIDEO_KEYFRAMES,
    partial(_keyframes, method="query"),
    resources=["clip"],
    gpu=True,
    execute=partial(execute_keyframes, method="query", columns=VIDEO_INDEX_COLUMNS),
)
uniform_keyframes = stage_asset(
    video.UNIFORM_KEYFRAMES,
    partial(_keyframes, method="uniform"),
    resources=["clip"],
    gpu=True,
    execute=partial(execute_keyframes, method="uniform", columns=VIDEO_INDEX_COLUMNS),
)
