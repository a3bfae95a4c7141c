"""Adding files already on this machine to the inbox as a new source, with its kind detected.

The files are copied (the default: the inbox then owns its data, and a later edit of the originals
does not silently change a processed source) or symlinked (no second copy of a large corpus). The
kind comes from the files themselves: videos, images or WebDataset shards, SFT records (a dialect
:func:`refinery.sft.normalize.normalize` recognises) or text (records with a ``text`` field, plain
text, HTML, PDF, WARC). A caller may name the kind instead, including the two non-partitioned
inboxes, ``reference`` (the KenLM / quality-classifier reference corpus) and ``target`` (mixing).
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from refinery.agent.roots import Roots
from refinery.ingest.text_reader import TEXT_SUFFIXES, matching_suffix
from refinery.multimodal.image_text_reader import SHARD_SUFFIXES
from refinery.multimodal.images import IMAGE_SUFFIXES
from refinery.multimodal.video_reader import VIDEO_SUFFIXES
from refinery.paths import Layout, check_source_name
from refinery.sft.normalize import Malformed, normalize
from refinery.sft.reader import SFT_SUFFIXES

KINDS = ("text", "sft", "image_text", "video", "reference", "target")
MODES = ("copy", "link")
SNIFF_RECORDS = 20  # records read from one JSON file to tell SFT from text


@dataclass
class AddedSource:
    kind: str
    name: str
    folder: str
    mode: str
    files: list[str]
    detected_from: str
    skipped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "kind": self.kind,
            "source": self.name,
            "inbox_folder": self.folder,
            "mode": self.mode,
            "files": len(self.files),
            "first_files": self.files[:10],
            "kind_detected_from": self.detected_from,
            "hidden_files_skipped": self.skipped[:10],
        }


def _records(path: Path, limit: int = SNIFF_RECORDS) -> list[dict]:
    """The first JSON objects of a .jsonl/.jsonl.gz/.json file (unparseable lines are skipped)."""
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    found: list[dict] = []
    try:
        with opener(path, "rt", encoding="utf-8", errors="replace") as fh:
            if path.name.lower().endswith(".json"):
                value = json.loads(fh.read(4_000_000))
                items = value if isinstance(value, list) else [value]
                return [r for r in items[:limit] if isinstance(r, dict)]
            for line in fh:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if isinstance(record, dict):
                    found.append(record)
                if len(found) >= limit:
                    break
    except (OSError, ValueError, EOFError):
        return []
    return found


def _parquet_records(path: Path, limit: int = SNIFF_RECORDS) -> list[dict]:
    import pyarrow.parquet as pq

    try:
        batch = next(pq.ParquetFile(path).iter_batches(batch_size=limit), None)
    except Exception:  # an unreadable file says nothing about the kind; the reader quarantines it
        return []
    return batch.to_pylist() if batch is not None else []


def _looks_sft(records: list[dict]) -> bool:
    votes = Counter()
    for record in records:
        if isinstance(record.get("text"), str):
            votes["text"] += 1
            continue
        try:
            normalize(record)
            votes["sft"] += 1
        except (Malformed, Exception):
            votes["other"] += 1
    return votes["sft"] > votes["text"]


def detect_kind(files: list[Path]) -> tuple[str, str]:
    """(kind, why): the inbox kind the files belong to, from their suffixes and first records."""
    if not files:
        raise ValueError("no files to add: the folder is empty (hidden files are ignored)")
    if videos := [f for f in files if matching_suffix(f, VIDEO_SUFFIXES)]:
        return "video", f"{len(videos)} video file(s) ({', '.join(VIDEO_SUFFIXES)})"
    images = [f for f in files if matching_suffix(f, IMAGE_SUFFIXES) or matching_suffix(f, SHARD_SUFFIXES)]
    if images:
        return "image_text", f"{len(images)} image file(s) or .tar shard(s)"
    records = [f for f in files if matching_suffix(f, SFT_SUFFIXES)]
    for path in records[:3]:
        sample = _parquet_records(path) if path.name.lower().endswith(".parquet") else _records(path)
        if sample and _looks_sft(sample):
            return (
                "sft",
                f"records of {path.name} are SFT (messages, instruction/output, prompt/completion …)",
            )
    if any(matching_suffix(f, TEXT_SUFFIXES) for f in files):
        return "text", "text records (a 'text' field), plain text, HTML, PDF or WARC files"
    suffixes = sorted({f.suffix or f.name for f in files})[:10]
    raise ValueError(
        f"cannot tell the kind of these files (suffixes {suffixes}); text takes {', '.join(TEXT_SUFFIXES)}, "
        f"sft {', '.join(SFT_SUFFIXES)}, image_text images or .tar shards, video {', '.join(VIDEO_SUFFIXES)}"
    )


def add_source(
    layout: Layout,
    roots: Roots,
    paths: list[str],
    name: str,
    kind: str | None = None,
    mode: str = "copy",
) -> AddedSource:
    """Copy or link ``paths`` (files, or folders walked recursively) into ``inbox/<kind>/<name>/``.

    Every path must lie inside ``roots`` (refused otherwise, symlinks and ``..`` included). The
    source folder must not exist yet: changing a processed source is a decision the caller makes
    by hand, not a side effect of adding one.
    """
    check_source_name(name)
    if mode not in MODES:
        raise ValueError(f"mode {mode!r}: use one of {MODES}")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind {kind!r}: use one of {KINDS} (or leave it out to detect it)")
    if not paths:
        raise ValueError("give at least one file or folder")
    chosen: list[tuple[Path, str]] = []  # (file, path inside the source folder)
    skipped: list[str] = []
    for raw in paths:
        path = roots.check(raw)
        if path.is_dir():
            for file in roots.walk(path):
                rel = file.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    skipped.append(str(file))
                    continue
                chosen.append(
                    (file, (Path(path.name) / rel).as_posix() if len(paths) > 1 else rel.as_posix())
                )
        elif path.is_file():
            chosen.append((path, path.name))
        else:
            raise FileNotFoundError(f"{raw}: no such file or folder")
    names = [rel for _, rel in chosen]
    if len(set(names)) != len(names):
        clash = sorted(n for n, c in Counter(names).items() if c > 1)[:5]
        raise ValueError(f"two files would get the same name in the source folder: {clash}")
    detected, why = (kind, "given by the caller") if kind else detect_kind([f for f, _ in chosen])
    folder = layout.inbox_kind(detected) / name
    if folder.exists():
        raise FileExistsError(
            f"inbox/{detected}/{name} already exists: pick another source name (changing a source re-runs it)"
        )
    staging = folder.with_name(f".{name}.adding")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for file, rel in chosen:
            target = staging / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if mode == "copy":
                shutil.copy2(file, target)
            else:
                os.symlink(file.resolve(), target)
        staging.mkdir(parents=True, exist_ok=True)
        os.replace(staging, folder)  # the sensor sees the source whole or not at all
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return AddedSource(detected, name, str(folder), mode, names, why, skipped)
