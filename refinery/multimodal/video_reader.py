"""Reading one source folder of the video inbox: questions about videos, each video probed once.

A source folder holds videos (``*.mp4``, ``*.avi``, ``*.mkv``, ``*.webm``) and one or more
questions tables (JSONL, CSV/TSV or Parquet): ``video`` (path relative to the table's folder),
``question``, optionally ``answer`` and ``id``; other fields go to ``meta``. One row per question.

Each video is opened with decord and its first and last frames decoded, so a file that is not a
video, a truncated one, or one whose stream breaks before its reported end is found here, not
in the middle of keyframe selection. Nothing vanishes: a question naming a missing or broken
video, a malformed or empty question, a video no question names and any other file become
quarantine rows with the reason, the file and the line.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, Field

from refinery import markdown
from refinery.ingest.text_reader import meta_json
from refinery.kernel.collector import MAX_RAW_FILE_BYTES, IngestBatch, RowCollector, matching_suffix
from refinery.kernel.surrogates import display_name
from refinery.metadata import Markdown
from refinery.multimodal.records import RECORD_SUFFIXES, BadRecord, first_field, inside, iter_records
from refinery.multimodal.schema import QUESTION_COLUMN, VIDEO_QUARANTINE_SCHEMA, VIDEO_SCHEMA

VIDEO_SUFFIXES = (".mp4", ".avi", ".mkv", ".webm")
VIDEO_FIELDS = ("video", "video_path", "file_name", "path")
QUESTION_FIELDS = ("question", "query", "text")


class VideoIngestParams(BaseModel):
    """How the video inbox is read."""

    max_question_chars: int = Field(2_000, description="Longer questions are quarantined as oversized.")
    min_frames: int = Field(1, description="Videos with fewer frames are quarantined.")
    batch_rows: int = Field(1_000, description="Questions per batch handed to the writer.")


@dataclass(frozen=True)
class VideoProbe:
    video_id: str
    size: int
    frames: int
    fps: float
    duration: float
    width: int
    height: int


def file_digest(path: Path) -> str:
    """blake2b-80 of the file's bytes: names the video's frame folder, detects a changed file."""
    digest = hashlib.blake2b(digest_size=10)
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def open_video(path: Path, threads: int = 1, width: int = -1, height: int = -1):
    """A decord VideoReader on the CPU (imported here: decord is heavy)."""
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=threads, width=width, height=height)


def probe_video(path: Path, min_frames: int = 1) -> tuple[VideoProbe | None, tuple[str, str] | None]:
    """(probe, None), or (None, (reason, detail)) for an empty or undecodable file."""
    size = path.stat().st_size
    if size == 0:
        return None, ("empty_file", "0 bytes")
    try:
        reader = open_video(path)
        frames = len(reader)
        fps = float(reader.get_avg_fps())
        if frames < min_frames:
            return None, ("undecodable_video", f"{frames} frames < min_frames {min_frames}")
        if not fps > 0:
            return None, ("undecodable_video", f"frame rate {fps} is not positive")
        first_last = reader.get_batch([0, frames - 1]).asnumpy()
        height, width = first_last.shape[1:3]
        del reader
    except Exception as err:  # decord raises its own error types for every kind of breakage
        message = " ".join(str(err).split())[:300] or type(err).__name__
        return None, ("undecodable_video", message)
    return VideoProbe(file_digest(path), size, frames, fps, frames / fps, int(width), int(height)), None


class VideoReaderSource(RowCollector):
    """Iterate :meth:`batches` (``documents`` hold question rows), then read :attr:`stats`.

    It walks the folder itself (videos pair with question tables, so files are not independent records);
    batching and quarantine rows come from :class:`refinery.kernel.collector.RowCollector`.
    """

    SCHEMA = VIDEO_SCHEMA
    QUARANTINE_SCHEMA = VIDEO_QUARANTINE_SCHEMA
    TEXT_COLUMN = QUESTION_COLUMN

    def __init__(self, folder: Path, source: str, params: VideoIngestParams | None = None):
        super().__init__(folder, source, params or VideoIngestParams())
        self.probes: dict[str, VideoProbe] = {}
        self.broken: dict[str, tuple[str, str]] = {}
        self._asked: set[Path] = set()

    def batches(self) -> Iterator[IngestBatch]:
        videos: list[tuple[Path, str]] = []
        for path, rel in self._files():
            if matching_suffix(path, RECORD_SUFFIXES):
                yield from self._read_table(path, rel)
            elif matching_suffix(path, VIDEO_SUFFIXES):
                videos.append((path, rel))
            else:
                expected = f"expected videos ({', '.join(VIDEO_SUFFIXES)}) or a questions table"
                self._quarantine(rel, None, "unsupported_file_type", expected, _small(path))
            yield from self._drain(final=False)
        for path, rel in videos:
            if path.resolve() in self._asked:
                continue
            problem = self._probe(path, rel)[1]
            if problem:
                self._quarantine(rel, None, problem[0], problem[1], _small(path), video_file=rel)
            else:
                why = "no questions table row names this video"
                self._quarantine(rel, None, "video_without_questions", why, None, video_file=rel)
            yield from self._drain(final=False)
        yield from self._drain(final=True)

    def report(self) -> dict:
        videos = [
            (rel, p.frames, round(p.fps, 3), round(p.duration, 2), f"{p.width}×{p.height}", p.size)
            for rel, p in sorted(self.probes.items())
        ]
        broken = [(rel, reason, detail[:120]) for rel, (reason, detail) in sorted(self.broken.items())]
        return {
            "videos": Markdown(
                markdown.table(["video", "frames", "fps", "seconds", "size", "bytes"], videos)
                if videos
                else "_none_"
            ),
            "undecodable_videos": Markdown(
                markdown.table(["video", "reason", "detail"], broken) if broken else "_none_"
            ),
        }

    def summary(self) -> dict:
        return {"videos": len(self.probes), "broken_videos": len(self.broken)}

    def _probe(self, path: Path, rel: str) -> tuple[VideoProbe | None, tuple[str, str] | None]:
        if rel not in self.probes and rel not in self.broken:
            probe, problem = probe_video(path, self.params.min_frames)
            if problem:
                self.broken[rel] = problem
            else:
                self.probes[rel] = probe
        return self.probes.get(rel), self.broken.get(rel)

    def _read_table(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        for item in iter_records(path):
            if isinstance(item, BadRecord):
                self._quarantine(rel, item.line, item.reason, item.detail, item.raw)
            else:
                self._question(rel, item.line, item.record, item.raw, path.parent)
            yield from self._drain(final=False)

    def _question(self, rel: str, line: int, record: dict, raw: bytes, base: Path) -> None:
        video_key, video_value = first_field(record, VIDEO_FIELDS)
        question_key, question = first_field(record, QUESTION_FIELDS)
        text = question if isinstance(question, str) else None
        if video_key is None or not isinstance(video_value, str):
            self._quarantine(
                rel, line, "missing_video", f"no video field ({', '.join(VIDEO_FIELDS)})", raw, text=text
            )
            return
        resolved, why = inside(self.folder, base, video_value)
        if why:
            self._quarantine(rel, line, "video_outside_source", why, raw, text=text, video_file=video_value)
            return
        self._asked.add(resolved)
        video_rel = display_name(resolved.relative_to(self.folder.resolve()).as_posix())
        if question_key is None or question is None:
            problem = ("missing_question", f"no question field ({', '.join(QUESTION_FIELDS)})")
        elif not isinstance(question, str):
            problem = ("question_not_string", f"question is {type(question).__name__}")
        elif not question.strip():
            problem = ("missing_question", "question is empty or whitespace only")
        elif len(question) > self.params.max_question_chars:
            problem = (
                "oversized",
                f"{len(question)} characters > max_question_chars {self.params.max_question_chars}",
            )
        elif not resolved.is_file():
            problem = ("video_not_found", f"{video_rel} does not exist")
        elif not matching_suffix(resolved, VIDEO_SUFFIXES):
            problem = ("unsupported_file_type", f"{video_rel} is not one of {', '.join(VIDEO_SUFFIXES)}")
        else:
            problem = self._probe(resolved, video_rel)[1]
        if problem:
            self._quarantine(rel, line, problem[0], problem[1], raw, text=text, video_file=video_rel)
            return
        probe = self.probes[video_rel]
        if record.get("id") is not None:
            row_id, error = self._ids.explicit(record["id"])
            if error:
                self._quarantine(rel, line, error.split(":")[0], error, raw, text=text, video_file=video_rel)
                return
        else:
            row_id = self._ids.derived(f"{video_rel}\n{question}")
        answer = record.get("answer")
        self.stats.files[rel] += 1
        self.stats.documents += 1
        self._batch.documents.append(
            {
                "id": row_id,
                "question": question,
                "answer": None if answer is None else str(answer),
                "source": self.source,
                "meta": meta_json(record, {"id", "answer", "meta", video_key, question_key}),
                "file": rel,
                "line": line,
                "video_file": video_rel,
                "video_id": probe.video_id,
                "video_bytes": probe.size,
                "frames": probe.frames,
                "fps": probe.fps,
                "duration": probe.duration,
                "width": probe.width,
                "height": probe.height,
            }
        )


def _small(path: Path) -> bytes | None:
    """The file's bytes when small enough to keep in a quarantine row."""
    return path.read_bytes() if path.stat().st_size <= min(MAX_RAW_FILE_BYTES, 1 << 20) else None
