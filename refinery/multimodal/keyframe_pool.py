"""The keyframe stages (video_keyframes, uniform_keyframes) on a Ray actor pool
(:func:`refinery.engine.model_pool.run_pooled`), one video per slice:

- **decode** (CPU tasks): each video checked against its ingest (size, content hash), its
  candidate frames (query: every 1/sample_fps seconds; uniform: the k centres) fetched by seeking
  with decord's ``get_batch``, exactly as :class:`keyframes.VideoFrames` does in-process, and
  preprocessed with the model's transform built from its configuration
  (:func:`clip_model.clip_transform`, no weights); the candidates' JPEGs go to a scratch folder,
  the pixels to the actors. A video that is missing, changed or breaks mid-stream carries its
  error instead of pixels.
- **infer** (the CLIP actors, ``compute.num_gpus`` GPUs each, the model loaded once per actor):
  the candidates embedded in batches of ``compute.batch_size`` and each question of the video
  with them: the candidates × questions similarity (:func:`keyframes.question_similarity`).
- **choose** (CPU tasks, one per video): :func:`keyframes.choose_frames`, the in-process
  selection, picks the frames and writes their JPEGs into the stage's frame folder
  (:class:`keyframes.FrameStore`, committed by the driver when every part is written).
- **parts** (CPU tasks, one per slice of raw_videos): :class:`keyframes.KeyframeAttach` writes
  each question's row (its frames, or the reason it got none: a broken video is quarantined).

The driver reads raw_videos' index columns (one short row per question, no pixels) to plan one
job per video, resolves the weights' files without loading them, and gathers per video only the
chosen frames' indices, scores and paths and the decode counts.

On any storage root: the scratch folder (the jobs table, the candidates' JPEGs) is under the root,
a local path or a URI that every task opens from its name
(:class:`~refinery.engine.root_folder.RootFolder`). On an object store the chosen frames go to a
staging folder of the run under the root, and the step publishes them under the frame folder before
it writes the manifests, the commit point (:class:`~refinery.multimodal.object_root.StagedFrameStore`).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.engine.model_pool import ModelStage, PoolRun, read_slice, run_pooled
from refinery.engine.model_stages import SCRATCH, WriteSlice, slice_outputs
from refinery.engine.resume import under_root
from refinery.engine.root_folder import RootFolder
from refinery.engine.slices import Slice, plan_slices
from refinery.kernel.execute import StageOutcome, execute_stage, finish
from refinery.kernel.runner import StageRun
from refinery.kernel.spec import ProcessorMaker, StageContext
from refinery.manifest import write_manifest_at
from refinery.models.pool import ModelPool
from refinery.multimodal.clip_model import (
    ClipModel,
    clip_transform,
    synthetic_domain_warning,
    trained_on_generated_scenes,
)
from refinery.multimodal.keyframe_report import every_frame_note
from refinery.multimodal.keyframes import (
    METHODS,
    FrameStore,
    KeyframeAttach,
    KeyframePass,
    VideoFrames,
    VideoJob,
    choose_frames,
    question_similarity,
    video_jobs,
)
from refinery.multimodal.object_root import StagedFrameStore, pooled_frame_store
from refinery.multimodal.tiny_clip_train import is_generated_caption
from refinery.stats import Histogram, StageStats
from refinery.tempfiles import fsync_dir, fsync_tree

VIDEO_COLUMNS = ["job", "path", "video_file", "video_id", "size", "frames", "fps", "qids", "questions"]


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _from_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _job(row: Any) -> VideoJob:
    return VideoJob(
        str(row["path"]), str(row["video_id"]), int(row["size"]), int(row["frames"]), float(row["fps"])
    )


def decode_videos(source, method: str, params, jpegs: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The CPU step: each video's candidates decoded and preprocessed (pixels as an .npy), their
    JPEGs written under ``jpegs/<job>/`` (a local path or a URI); a broken video carries its error."""
    transform, size = clip_transform(source)
    out: dict[str, list] = {"job": [], "pixels": [], "texts": [], "item": []}
    for _, row in frame.iterrows():
        item = VideoFrames([_job(row)], transform, size, method, params)[0]
        folder = RootFolder(jpegs).sub(f"{int(row['job']):07d}").make()
        for position, jpeg in enumerate(item.pop("jpegs", [])):
            folder.write_bytes(f"{position:06d}.jpg", jpeg)
        pixels = item.pop("pixels").numpy().astype(np.float32)
        out["job"].append(int(row["job"]))
        out["pixels"].append(_npy(pixels))
        questions = json.loads(row["questions"])
        out["texts"].append(json.dumps([params.query_template.format(question=q) for q in questions]))
        out["item"].append(json.dumps(item))
    return pd.DataFrame(out)


def load_clip(loader) -> ClipModel:
    return loader.load()


def embed_videos(clip: ClipModel, frame: pd.DataFrame) -> pd.DataFrame:
    """An actor's work: each video's candidates × questions similarity (empty for a broken video)."""
    import torch

    similarities, seconds = [], []
    for pixels, texts, item in zip(frame["pixels"], frame["texts"], frame["item"], strict=True):
        questions = json.loads(texts)
        started = time.perf_counter()
        if json.loads(item)["error"]:
            similarity = np.zeros((0, len(questions)), dtype=np.float32)
        else:
            similarity = question_similarity(clip, torch.from_numpy(_from_npy(pixels)), questions)
        seconds.append(time.perf_counter() - started)
        similarities.append(_npy(np.asarray(similarity)))
    return pd.DataFrame(
        {"similarity": similarities, "embed_seconds": seconds, "item": frame["item"].tolist()}
    )


def describe_clip(clip: ClipModel) -> dict:
    return {"model": clip.name, "device": clip.device}


@dataclass
class ChooseVideo:
    """The per-video CPU task after the actors: the in-process selection over the video's
    similarities, its chosen JPEGs copied into the frame folder."""

    method: str
    params: Any
    store: FrameStore
    jpegs: str

    def __call__(self, piece: Slice, outputs: Any, model: dict) -> dict:
        started = time.perf_counter()
        result = KeyframePass(self.method)
        found: dict = {"index": piece.index, "picked": [], "uniform": []}
        if outputs is None:
            return {**found, "plan": result}
        rows = read_slice(piece, VIDEO_COLUMNS)
        for row, similarity, embed_seconds, raw in zip(
            rows.to_dict("records"),
            outputs.column("similarity").to_pylist(),
            outputs.column("embed_seconds").to_pylist(),
            outputs.column("item").to_pylist(),
            strict=True,
        ):
            item = json.loads(raw)
            if not item["error"]:
                item["jpegs"] = _LazyJpegs(RootFolder(self.jpegs).sub(f"{int(row['job']):07d}"))
            picked, uniform = choose_frames(
                result,
                (row["video_file"], row["video_id"]),
                json.loads(row["qids"]),
                _job(row),
                item,
                _from_npy(similarity),
                self.store,
                self.params,
                (float(embed_seconds), started - float(embed_seconds)),
            )
            found["picked"] += picked
            found["uniform"] += uniform
        return {**found, "plan": result}


class _LazyJpegs:
    """A video's candidate JPEGs by position, read from the scratch folder when chosen."""

    def __init__(self, folder: RootFolder):
        self.folder = folder

    def __getitem__(self, position: int) -> bytes:
        name = f"{int(position):06d}.jpg"
        data = self.folder.read_bytes(name)
        if data is None:
            raise FileNotFoundError(f"{self.folder.name}: candidate frame {name} was not written")
        return data


def keyframe_attach(plan: KeyframePass, outputs: Any, model: dict) -> KeyframeAttach:
    return KeyframeAttach(plan)


def write_slice(payload: bytes, piece: Slice) -> dict:
    """The per-slice CPU task: each question of the slice gets its row (frames or reason)."""
    from ray import cloudpickle

    return cloudpickle.loads(payload)(piece, None, {})


def write_jobs(groups: list, jobs: list[VideoJob], target: RootFolder) -> Path | str:
    """One row per video (a row group each: a slice each) for the pool to read; returns the
    location the pool reads (an object store's folder committed by its manifest)."""
    frame = pd.DataFrame(
        {
            "job": list(range(len(jobs))),
            "path": [j.path for j in jobs],
            "video_file": [file for (file, _), _ in groups],
            "video_id": [j.video_id for j in jobs],
            "size": [j.size for j in jobs],
            "frames": [j.frames for j in jobs],
            "fps": [j.fps for j in jobs],
            "qids": [json.dumps(g["id"].tolist()) for _, g in groups],
            "questions": [json.dumps(g["question"].tolist()) for _, g in groups],
        }
    )
    schema = pa.schema(
        [
            ("job", pa.int64()),
            ("path", pa.string()),
            ("video_file", pa.string()),
            ("video_id", pa.string()),
            ("size", pa.int64()),
            ("frames", pa.int64()),
            ("fps", pa.float64()),
            ("qids", pa.string()),
            ("questions", pa.string()),
        ]
    )
    table = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
    target.make()
    pq.write_table(table, target.file("part-0.parquet"), row_group_size=1, filesystem=target.fs)
    if target.local:
        return Path(target.path)
    write_manifest_at(target.fs, target.path, ["part-0.parquet"], {})
    return target.name


@dataclass
class KeyframePoolRun:
    run: StageRun
    plan: KeyframePass
    pool: PoolRun


def run_keyframes_pooled(
    ctx: StageContext,
    rows: pd.DataFrame,
    folder: Path,
    loader: Any,
    pool: ModelPool,
    store: FrameStore | StagedFrameStore,
    method: str,
    synthetic: bool,
    before_commit: Callable[[], None] | None = None,
) -> KeyframePoolRun:
    """A keyframe stage over the partition on the context's Ray engine (see the module doc):
    decode tasks, CLIP actors, per-video choose tasks, then per-slice part tasks. The frames are
    written into ``store``'s temporary folder (the caller commits them; ``before_commit`` runs
    just before the parts' commit); returns the run and the gathered plan."""
    from ray import cloudpickle

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    started = time.perf_counter()
    spec, params = ctx.spec, ctx.params
    plan = KeyframePass(method)
    if synthetic:
        in_domain = sum(is_generated_caption(q) for q in rows["question"])
        plan.domain_warning = synthetic_domain_warning(
            f"{method} keyframes", in_domain, len(rows), "questions"
        )
    groups, jobs = video_jobs(rows, folder)
    scratch = RootFolder.of(under_root(ctx.storage, SCRATCH)).sub(f"keyframes-{uuid.uuid4().hex[:12]}")
    jpegs = scratch.sub("jpegs")
    upstream, schema, rejected_schema, writer = slice_outputs(ctx)
    source = loader.source()
    stage = ModelStage(
        VIDEO_COLUMNS,
        load=partial(load_clip, loader),
        infer=embed_videos,
        decode=partial(decode_videos, source, method, params, jpegs.name),
        describe=describe_clip,
    )
    try:
        videos = write_jobs(groups, jobs, scratch.sub("videos"))
        # One video per slice, one video per actor call: the actor embeds its candidates in
        # batches of compute.batch_size, as the in-process pass does.
        engine = replace(ctx.engine, slice_rows=1)
        pool_run = run_pooled(
            engine,
            videos,
            stage,
            replace(pool, batch_size=1),
            ChooseVideo(method, params, store, jpegs.name),
            scratch.name,
        )
        picked, uniform = [], []
        for found in sorted(pool_run.parts, key=lambda p: p["index"]):
            chosen: KeyframePass = found["plan"]
            plan.results.update(chosen.results)
            plan.rejected.update(chosen.rejected)
            plan.videos.update(chosen.videos)
            picked += found["picked"]
            uniform += found["uniform"]
        # Counted on disk: two videos with the same content (one video_id) share their frames.
        store.written = store.stored()
        plan.mean_scores(picked, uniform)
        plan.seconds = time.perf_counter() - started
        job = WriteSlice(
            partial(keyframe_attach, plan),
            writer,
            schema,
            rejected_schema,
            dict(spec.histograms),
            spec.text_column,
            getattr(params, "batch_rows", None) or spec.batch_rows,
        )
        runner, _ = ctx.engine.tasks()
        slices = plan_slices(upstream, ctx.engine.slice_rows)
        payload = cloudpickle.dumps(job)  # one object: the runner sends it to the store once
        parts = runner.map(write_slice, [(payload, s) for s in slices])
        if before_commit is not None:
            before_commit()
        path, rejected_path = writer.commit(len(parts))
    except BaseException:
        writer.abort()
        raise
    finally:
        scratch.remove()
    stats = StageStats(
        histograms={n: Histogram(e) for n, e in spec.histograms.items()}, text_column=spec.text_column
    )
    for part in sorted(parts, key=lambda p: p["index"]):
        stats.merge(part["stats"])
    run = StageRun(spec.name, ctx.source, path, rejected_path, time.perf_counter() - started, stats, schema)
    run.extra["engine"] = {**ctx.engine.describe(), "model_pool": pool_run.describe()}
    return KeyframePoolRun(run, plan, pool_run)


def frames_beside_parts(store: FrameStore, parts: Path) -> None:
    """The frame folder committed into the committed parts folder: the stage's frames live at
    ``<asset>/<source>/<video_id>/`` in both layouts (in-process: beside ``<source>.parquet``),
    and the parts folder is that same folder, so the frames move in beside the part files (which
    replaced the old folder, old frames with it)."""
    if Path(parts) != store.final:
        raise RuntimeError(f"the parts are at {parts}, not at the frame folder {store.final}")
    fsync_tree(store.temp)
    for entry in sorted(store.temp.iterdir()):
        os.replace(entry, store.final / entry.name)
    fsync_dir(store.final)
    shutil.rmtree(store.temp, ignore_errors=True)


def execute_keyframes(
    ctx: StageContext, make: ProcessorMaker, gpus: float = 0, *, method: str, columns: list[str]
) -> StageOutcome:
    """``make`` in the step's process on the local engine; on a distributed engine the pool above,
    with the clip resource's weights resolved on the driver (never loaded there) and the pool's
    shape from its ``compute`` (``model_pool()``). ``columns``: raw_videos' index columns."""
    if not ctx.engine.distributed:
        return execute_stage(ctx, make, gpus)
    loader = ctx.resources.clip
    source = loader.source()
    ctx.provenance["clip_model"] = source.name
    rows = ctx.storage.read(ctx.spec.upstream, ctx.source, columns=columns)
    folder = ctx.layout.inbox_source(ctx.spec.kind, ctx.source)
    pool = loader.compute.model_pool()
    store = pooled_frame_store(ctx.storage, ctx.spec.name, ctx.source)
    staged = isinstance(store, StagedFrameStore)  # an object store: published before the manifests
    try:
        done = run_keyframes_pooled(
            ctx, rows, folder, loader, pool, store, method, trained_on_generated_scenes(source.weights),
            before_commit=store.publish if staged else None,
        )  # fmt: skip
        if staged:
            store.commit()  # committed: the frames no row names go, then the staging folder
        else:
            frames_beside_parts(store, done.run.path)
    except BaseException:
        store.abort()
        raise
    plan = done.plan
    if plan.domain_warning:
        ctx.log.warning(plan.domain_warning)
    if plan.every_frame_videos:
        ctx.log.info(every_frame_note(plan))
    info = {**done.pool.model, "ray_actors": pool.actors, "num_gpus": pool.num_gpus}
    process = KeyframeAttach(plan, store, rows, ctx.params.strip_samples, info)
    ctx.log.info(
        f"{ctx.spec.name}[{ctx.source}]: {len(plan.videos)} videos on a Ray pool of {pool.actors} CLIP "
        f"actor(s) ({done.pool.nodes} node(s), loads per actor {sorted(done.pool.loads.values())}), "
        f"{sum(v.converted for v in plan.videos.values())} candidate frames, in {plan.seconds:.2f}s"
    )
    return finish(ctx, done.run, process, rows_in=ctx.rows_in() - done.run.stats.rows_routed)
