"""Query-based keyframe selection, and uniform sampling as its baseline.

For each video, candidate frames are taken at ``sample_fps`` (one per second by default; at or above
the video's own frame rate every frame is a candidate, and the metadata says so) and fetched with
decord's ``get_batch`` on exactly those indices, in chunks. Only the candidates are converted to RGB
and returned (``frames_converted``), but a compressed stream can only be decoded from a keyframe:
for each candidate decord seeks to the keyframe before it (``SeekAccurate``) unless it is already
in that keyframe's group, and decodes every frame from there to the candidate. So the frames the
decoder really decodes depend on the keyframe interval: all of them when a video has one keyframe
(common for short clips: x264 puts one every 250 frames unless the scene cuts), the candidates
alone when every frame is a keyframe. ``frames_decoded`` is that number, computed from the video's
keyframe index (``get_key_indices``) by replaying decord's seek rule (:func:`frames_decoded_by_seeking`);
it is an estimate in that a decoder with B-frames also reads a few packets beyond a target.
DataLoader workers decode one video each, preprocess every candidate for CLIP and keep it as a
JPEG, while the main process embeds the candidates and each question about the video with CLIP
and picks the frames; the chosen frames' JPEGs are written, so nothing is decoded twice.

Selection is greedy non-maximum suppression over time: take the candidate most similar to the
question, suppress every candidate within ``min_gap_seconds`` of it, repeat until ``k`` frames
are picked or none is left (so a short video may get fewer than ``k``). That is the same as
"top-k under a minimum gap between picks". Frames are returned in time order with their scores.

The chosen frames are JPEG files under ``storage/<asset>/<source>/<video_id>/<frame>.jpg`` (at
the decoded size, or shrunk to ``frame_max_side``); the Parquet output has one row per question
with the frame indices, timestamps, scores and paths as lists.
"""

from __future__ import annotations

import io
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.models.device import worker_context
from refinery.multimodal.clip_model import ClipModel, synthetic_domain_warning
from refinery.multimodal.tiny_clip_train import is_generated_caption
from refinery.multimodal.video_reader import file_digest, open_video
from refinery.tempfiles import clean_stray, fsync_dir, fsync_tree, temp_path

METHODS = ("query", "uniform")
# Beside KEYFRAME_FIELDS (whose frames_decoded is the decoder's count, from the keyframe index).
DECODE_FIELDS = [pa.field("frames_converted", pa.int32(), nullable=False)]  # the candidates, per video


class KeyframeParams(BaseModel):
    k: int = Field(8, ge=1, description="Frames per question.")
    sample_fps: float = Field(
        1.0,
        gt=0,
        description="Candidate frames per second of video; at or above a video's frame rate every frame is a "
        "candidate (the metadata says which videos).",
    )
    max_candidates: int = Field(
        600, ge=1, description="At most this many candidates; longer videos get a wider stride."
    )
    min_gap_seconds: float = Field(
        2.0, ge=0, description="Suppression radius of greedy temporal NMS (0: plain top-k)."
    )
    min_score: float | None = Field(
        None, description="Candidates with a lower cosine are never picked (a question may get fewer than k)."
    )
    query_template: str = Field(
        "{question}", description="How a question becomes CLIP text, e.g. 'a photo of {question}'."
    )
    jpeg_quality: int = Field(90, ge=1, le=100, description="Quality of the stored frames.")
    frame_max_side: int = Field(
        0, ge=0, description="Stored frames are shrunk to this longest side (0: as decoded)."
    )
    decode_chunk: int = Field(32, ge=1, description="Frames per get_batch call (bounds memory per worker).")
    strip_samples: int = Field(3, ge=0, description="Questions shown as frame strips in the metadata.")


class UniformParams(BaseModel):
    k: int = Field(8, ge=1, description="Frames per question, evenly spaced.")
    query_template: str = Field("{question}", description="Used to score the frames against the question.")
    jpeg_quality: int = Field(90, ge=1, le=100, description="Quality of the stored frames.")
    frame_max_side: int = Field(
        0, ge=0, description="Stored frames are shrunk to this longest side (0: as decoded)."
    )
    decode_chunk: int = Field(32, ge=1, description="Frames per get_batch call (bounds memory per worker).")
    strip_samples: int = Field(3, ge=0, description="Questions shown as frame strips in the metadata.")


# -- indices and selection (pure functions) -----------------------------------------------------
def candidate_indices(frames: int, fps: float, sample_fps: float, max_candidates: int) -> np.ndarray:
    """Frame indices sampled at ``sample_fps`` (every frame when it reaches ``fps``), at most
    ``max_candidates``."""
    if not sample_fps > 0:
        raise ValueError(f"sample_fps must be positive (candidate frames per second), got {sample_fps}")
    if frames <= 0:
        return np.zeros(0, dtype=np.int64)
    if sample_fps >= fps:
        idx = np.arange(frames, dtype=np.int64)
    else:
        idx = np.unique(np.round(np.arange(0, frames, fps / sample_fps)).astype(np.int64))
        idx = idx[idx < frames]
    if len(idx) > max_candidates:
        idx = np.unique(np.round(np.linspace(0, frames - 1, max_candidates)).astype(np.int64))
    return idx


def uniform_indices(frames: int, k: int) -> np.ndarray:
    """The centres of ``k`` equal slices of the video (distinct; fewer if it has fewer frames)."""
    if frames <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.unique(np.floor((np.arange(k) + 0.5) * frames / k).astype(np.int64).clip(0, frames - 1))


def frames_decoded_by_seeking(indices, key_indices, frames: int) -> int:
    """Frames a decord ``VideoReader`` decodes to return ``indices`` (in that order) from a fresh
    reader: decord's ``GetBatch`` → ``SeekAccurate`` rule replayed on the keyframe index.

    For each target: if the reader is at it, one frame; if the target lies ahead in the keyframe
    group the reader is in, every frame from the current position to it; otherwise a seek to the
    target's keyframe and every frame from there to it. Runs that overlap are decoded once when they
    follow each other in one group, again after a seek back (decord's own behaviour).
    """
    keys = np.asarray(sorted(int(k) for k in key_indices), dtype=np.int64)

    def keyframe_of(pos: int) -> int:  # decord's LocateKeyframe
        if not len(keys) or pos <= keys[0]:
            return 0
        if pos >= frames:
            return int(keys[-1])
        return int(keys[np.searchsorted(keys, pos, side="right") - 1])

    current, decoded = 0, 0
    for pos in (int(i) for i in indices):
        if pos == current:
            decoded += 1
        elif keyframe_of(pos) != keyframe_of(current) or pos < current:
            decoded += pos - keyframe_of(pos) + 1
        else:
            decoded += pos - current + 1
        current = pos + 1
    return decoded


def select_keyframes(scores: np.ndarray, times: np.ndarray, k: int, min_gap: float) -> np.ndarray:
    """Positions (into ``scores``) of up to ``k`` picks by greedy temporal NMS, in time order.

    Ties in score go to the earlier frame, so the result does not depend on the input order.
    """
    scores = np.asarray(scores, dtype=np.float64)
    times = np.asarray(times, dtype=np.float64)
    order = np.lexsort((times, -scores))
    picked: list[int] = []
    suppressed = np.zeros(len(scores), dtype=bool)
    for i in order:
        if len(picked) == k:
            break
        if suppressed[i] or not np.isfinite(scores[i]):
            continue
        picked.append(int(i))
        if min_gap > 0:
            suppressed |= np.abs(times - times[i]) < min_gap - 1e-9
    return np.array(sorted(picked, key=lambda i: times[i]), dtype=np.int64)


# -- decoding in workers ------------------------------------------------------------------------
@dataclass(frozen=True)
class VideoJob:
    path: str
    video_id: str  # content hash recorded at ingest
    size: int
    frames: int
    fps: float


class VideoFrames:
    """Map-style dataset: one video per item, its chosen frames decoded and preprocessed.

    Checks first that the file is the one ingested (size and content hash). Picklable for
    ``spawn`` workers.
    """

    def __init__(self, jobs: list[VideoJob], preprocess, image_size: int, method: str, params):
        self.jobs = jobs
        self.preprocess = preprocess
        self.image_size = image_size
        self.method = method
        self.params = params

    def __len__(self) -> int:
        return len(self.jobs)

    def indices(self, job: VideoJob, frames: int) -> np.ndarray:
        if self.method == "uniform":
            return uniform_indices(frames, self.params.k)
        return candidate_indices(frames, job.fps, self.params.sample_fps, self.params.max_candidates)

    def __getitem__(self, i: int) -> dict:
        import torch

        job = self.jobs[i]
        empty = torch.zeros(0, 3, self.image_size, self.image_size)
        out = {
            "job": i,
            "pixels": empty,
            "indices": [],
            "frames": job.frames,
            "decoded": 0,
            "keyframes": 0,
            "decode_seconds": 0.0,
            "error": None,
        }
        path = Path(job.path)
        if not path.is_file():
            out["error"] = ("video_missing", f"{job.path} is gone since raw_videos ran")
            return out
        if path.stat().st_size != job.size or file_digest(path) != job.video_id:
            out["error"] = (
                "video_changed",
                f"{job.path} changed since raw_videos ran: materialize raw_videos again",
            )
            return out
        started = time.perf_counter()
        try:
            reader = open_video(path)
            frames = len(reader)
            idx = self.indices(job, frames)
            keys = reader.get_key_indices()  # from the container's index: nothing decoded
            decoded = frames_decoded_by_seeking(idx, keys, frames)
            tensors, jpegs = [], []
            for start in range(0, len(idx), self.params.decode_chunk):
                batch = reader.get_batch(idx[start : start + self.params.decode_chunk].tolist()).asnumpy()
                for frame in batch:
                    image = Image.fromarray(frame)
                    tensors.append(self.preprocess(image))
                    jpegs.append(encode_jpeg(image, self.params.jpeg_quality, self.params.frame_max_side))
            del reader
        except Exception as err:  # decord's errors for a stream that breaks mid-way
            out["error"] = ("decode_failed", " ".join(str(err).split())[:300] or type(err).__name__)
            return out
        out.update(
            pixels=torch.stack(tensors) if tensors else out["pixels"],
            indices=idx.tolist(),
            jpegs=jpegs,
            frames=frames,
            decoded=decoded,
            keyframes=len(keys),
            decode_seconds=time.perf_counter() - started,
        )
        return out


def encode_jpeg(image: Image.Image, quality: int, max_side: int) -> bytes:
    """A decoded frame as JPEG bytes (shrunk to ``max_side`` when set)."""
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def _no_collate(item):
    return item


# -- the frame folder ---------------------------------------------------------------------------
class FrameStore:
    """JPEGs under ``<root>/<asset>/<source>/``, replaced as a whole when the stage succeeds."""

    def __init__(self, storage_root: Path, asset: str, source: str):
        self.root = Path(storage_root)
        self.relative = Path(asset) / source
        self.final = self.root / self.relative
        self.final.parent.mkdir(parents=True, exist_ok=True)
        clean_stray(self.final.parent)  # frame folders of killed runs
        self.temp = temp_path(self.final)
        self.temp.mkdir(parents=True)
        self.written = 0

    def write(self, video_id: str, index: int, jpeg: bytes) -> str:
        """Store one frame's JPEG; returns its path relative to the storage root."""
        name = Path(video_id) / f"{index:06d}.jpg"
        target = self.temp / name
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(jpeg)
            self.written += 1
        return (self.relative / name).as_posix()

    def stored(self) -> int:
        """The frames in the temporary folder (two videos of one content share theirs)."""
        return sum(1 for _ in self.temp.rglob("*.jpg"))

    def open(self, relative: str) -> Image.Image:
        """A stored frame, before or after :meth:`commit`."""
        inner = Path(relative).relative_to(self.relative)
        path = self.temp / inner if self.temp.exists() else self.final / inner
        with Image.open(path) as image:
            return image.convert("RGB")

    def commit(self) -> None:
        fsync_tree(self.temp)  # every JPEG durable before the folder becomes visible
        old = temp_path(self.final, "old")
        if self.final.exists():
            os.replace(self.final, old)
        os.replace(self.temp, self.final)
        fsync_dir(self.final.parent)
        shutil.rmtree(old, ignore_errors=True)

    def abort(self) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)

    def __enter__(self) -> FrameStore:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        """The frames replace the old folder only if the stage succeeded."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()


# -- the pass over a partition ------------------------------------------------------------------
@dataclass
class QuestionResult:
    frame_indices: list[int]
    timestamps: list[float]
    scores: list[float]
    frame_paths: list[str]
    video_key: str


@dataclass
class VideoStats:
    video_file: str
    frames: int
    candidates: int
    converted: int  # frames converted to RGB and returned by get_batch: the candidates (uniform: the k)
    decoded: int  # frames the decoder decoded to reach them (from the keyframe index; see the module doc)
    keyframes: int
    every_frame: bool  # sample_fps reached the video's frame rate: every frame is a candidate
    decode_seconds: float
    embed_seconds: float
    total_seconds: float
    questions: int


@dataclass
class KeyframePass:
    method: str
    results: dict[str, QuestionResult] = field(default_factory=dict)  # question id -> frames
    rejected: dict[str, tuple[str, str]] = field(default_factory=dict)  # question id -> reason
    videos: dict[str, VideoStats] = field(default_factory=dict)
    seconds: float = 0.0
    # Query mode: mean similarity of the picks vs of the candidates nearest uniform times.
    selected_mean_score: float = float("nan")
    uniform_mean_score: float = float("nan")
    domain_warning: str | None = None  # the tiny CLIP asked about things it was not trained on
    workers: int = 0  # DataLoader workers used: dataloader_workers, at most one per video

    def mean_scores(self, picked: list[float], uniform: list[float]) -> None:
        """Query mode: the picks' and the uniform frames' mean similarities over the questions."""
        if picked:
            self.selected_mean_score = float(np.mean(picked))
            self.uniform_mean_score = float(np.mean(uniform))

    @property
    def every_frame_videos(self) -> list[str]:
        return [v.video_file for v in self.videos.values() if v.every_frame]


def _embed_frames(clip: ClipModel, pixels) -> np.ndarray:
    if not len(pixels):
        return np.zeros((0, max(clip.dim, 1)), dtype=np.float32)
    step = clip.batch_size
    return np.concatenate([clip.encode_pixels(pixels[s : s + step]) for s in range(0, len(pixels), step)])


def _unit(text_emb: np.ndarray) -> np.ndarray:
    return text_emb / np.maximum(np.linalg.norm(text_emb, axis=1, keepdims=True), 1e-12)


def video_jobs(rows: pd.DataFrame, folder: Path) -> tuple[list, list[VideoJob]]:
    """The partition's questions grouped per video (first appearance order), and a job per video."""
    groups = list(rows.groupby(["video_file", "video_id"], sort=False))
    jobs = [
        VideoJob(
            str(folder / file),
            video_id,
            int(g["video_bytes"].iloc[0]),
            int(g["frames"].iloc[0]),
            float(g["fps"].iloc[0]),
        )
        for (file, video_id), g in groups
    ]
    return groups, jobs


def question_similarity(clip: ClipModel, pixels, questions: list[str]) -> np.ndarray:
    """Candidates × questions: each frame's embedding against each question's unit embedding."""
    frame_emb = _embed_frames(clip, pixels)
    text_emb = clip.encode_texts(questions)
    return frame_emb @ _unit(text_emb).T


def choose_frames(
    result: KeyframePass,
    video: tuple[str, str],
    qids: list[str],
    job: VideoJob,
    item: dict,
    similarity: np.ndarray,
    store: FrameStore,
    params: KeyframeParams | UniformParams,
    timing: tuple[float, float],
) -> tuple[list[float], list[float]]:
    """One decoded video's frames chosen for each of its questions (``similarity``: candidates ×
    questions), the chosen JPEGs written to ``store``, the video's stats recorded in ``result``.
    ``item`` is what :class:`VideoFrames` returned for it; ``timing`` (embed seconds, the time
    the video's work started). Returns the query mode's (picked, uniform) mean scores."""
    video_file, video_id = video
    method = result.method
    picked_scores: list[float] = []
    uniform_scores: list[float] = []
    if item["error"]:
        for qid in qids:
            result.rejected[qid] = tuple(item["error"])
        return picked_scores, uniform_scores
    embed_seconds, video_started = timing
    indices = np.asarray(item["indices"], dtype=np.int64)
    fps = job.fps
    times = indices / fps
    chosen: dict[str, np.ndarray] = {}
    for column, qid in enumerate(qids):
        if not len(indices):
            result.rejected[qid] = ("no_frames", "the video yielded no frames to choose from")
            continue
        if method == "query":
            scores = similarity[:, column]
            if params.min_score is not None:
                scores = np.where(scores >= params.min_score, scores, -np.inf)
            positions = select_keyframes(scores, times, params.k, params.min_gap_seconds)
            uniform_times = uniform_indices(job.frames, params.k) / fps
            nearest = np.unique(np.abs(times[None, :] - uniform_times[:, None]).argmin(1))
            picked_scores.append(float(similarity[positions, column].mean()))
            uniform_scores.append(float(similarity[nearest, column].mean()))
        else:
            positions = np.arange(len(indices))
        chosen[qid] = positions
    # Write the chosen frames: the decoder encoded every candidate it decoded, so nothing is decoded twice.
    wanted = sorted({int(p) for positions in chosen.values() for p in positions})
    paths = {p: store.write(video_id, int(indices[p]), item["jpegs"][p]) for p in wanted}
    for column, qid in enumerate(qids):
        if qid not in chosen:
            continue
        positions = chosen[qid]
        result.results[qid] = QuestionResult(
            frame_indices=[int(indices[p]) for p in positions],
            timestamps=[round(float(times[p]), 4) for p in positions],
            scores=[float(similarity[p, column]) for p in positions],
            frame_paths=[paths[int(p)] for p in positions],
            video_key=video_id,
        )
    result.videos[video_file] = VideoStats(
        video_file=video_file,
        frames=int(item["frames"]),
        candidates=len(indices),
        converted=len(indices),
        decoded=int(item["decoded"]),
        keyframes=int(item["keyframes"]),
        every_frame=method == "query" and params.sample_fps >= fps and len(indices) == int(item["frames"]),
        decode_seconds=float(item["decode_seconds"]),
        embed_seconds=embed_seconds,
        total_seconds=float(item["decode_seconds"]) + time.perf_counter() - video_started,
        questions=len(qids),
    )
    return picked_scores, uniform_scores


def keyframe_pass(
    rows: pd.DataFrame,
    folder: Path,
    clip: ClipModel,
    store: FrameStore,
    method: str,
    params: KeyframeParams | UniformParams,
    workers: int,
) -> KeyframePass:
    """Choose frames for every question of ``rows`` (raw_videos' columns), write them, report."""
    from torch.utils.data import DataLoader

    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {METHODS}")
    started = time.perf_counter()
    result = KeyframePass(method)
    if clip.synthetic:
        in_domain = sum(is_generated_caption(q) for q in rows["question"])
        result.domain_warning = synthetic_domain_warning(
            f"{method} keyframes", in_domain, len(rows), "questions"
        )
    groups, jobs = video_jobs(rows, folder)
    if not jobs:
        return result
    dataset = VideoFrames(jobs, clip.preprocess, clip.image_size, method, params)
    result.workers = workers = min(workers, len(jobs))
    kwargs = {}
    if workers:
        kwargs["multiprocessing_context"] = worker_context(clip.device, ["open_clip", __name__])
    loader = DataLoader(dataset, batch_size=None, num_workers=workers, collate_fn=_no_collate, **kwargs)
    picked_scores, uniform_scores = [], []
    for item in loader:
        video_started = time.perf_counter()
        video, group = groups[item["job"]]
        similarity, embed_seconds = np.zeros((0, len(group))), 0.0
        if not item["error"]:
            embed_started = time.perf_counter()
            questions = [params.query_template.format(question=q) for q in group["question"]]
            similarity = question_similarity(clip, item["pixels"], questions)
            embed_seconds = time.perf_counter() - embed_started
        picked, uniform = choose_frames(
            result,
            video,
            group["id"].tolist(),
            jobs[item["job"]],
            item,
            similarity,
            store,
            params,
            (embed_seconds, video_started),
        )
        picked_scores += picked
        uniform_scores += uniform
    result.mean_scores(picked_scores, uniform_scores)
    result.seconds = time.perf_counter() - started
    return result


class KeyframeAttach(StageProcessor):
    """``run_stage``'s process: each question gets its frames, or the reason it got none. Its
    report reads the frames back from ``store`` for a strip of samples."""

    def __init__(
        self,
        plan: KeyframePass,
        store: FrameStore | None = None,
        rows: pd.DataFrame | None = None,
        strip_samples: int = 0,
        model_info: dict | None = None,
    ):
        self.plan, self.store, self.rows = plan, store, rows
        self.strip_samples, self.model_info = strip_samples, model_info or {}

    def report(self) -> dict:
        from refinery.multimodal.keyframe_report import keyframe_report

        return keyframe_report(self)

    def summary(self) -> dict:
        videos = self.plan.videos.values()
        return {
            "frames_in_videos": sum(v.frames for v in videos),
            "frames_converted": sum(v.converted for v in videos),
            "frames_decoded_estimated": sum(v.decoded for v in videos),
            "frames_written": self.store.written if self.store else 0,
            "every_frame_a_candidate": self.plan.every_frame_videos,
        }

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        plan = self.plan
        names = ("frame_indices", "timestamps", "scores", "frame_paths", "frames_decoded", "frames_converted")
        columns: dict[str, list] = {name: [] for name in names}
        reasons = []
        for qid, video_file in zip(frame["id"], frame["video_file"], strict=True):
            found = plan.results.get(qid)
            stats = plan.videos.get(video_file)
            if found is None:
                reasons.append(plan.rejected.get(qid, ("not_processed", "the video was not processed")))
            else:
                reasons.append(None)
            columns["frame_indices"].append(found.frame_indices if found else [])
            columns["timestamps"].append(found.timestamps if found else [])
            columns["scores"].append(found.scores if found else [])
            columns["frame_paths"].append(found.frame_paths if found else [])
            columns["frames_decoded"].append(stats.decoded if stats else 0)
            columns["frames_converted"].append(stats.converted if stats else 0)
        out = frame.assign(method=plan.method, **columns)
        return split_batch(out, reasons)
