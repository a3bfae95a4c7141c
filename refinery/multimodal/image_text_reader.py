"""Reading one source folder of the image–text inbox into pairs and quarantine rows.

Two layouts, freely mixed in one folder:

- **a captions table** (``*.jsonl``, ``*.csv``, ``*.tsv``, ``*.parquet``) with one record per
  pair: the image path (``image``; also ``image_path``, ``file_name``, ``path``), relative to the
  table's folder, and its ``caption`` (or ``text``), optionally ``id`` and ``url``; other fields go
  to ``meta``. The images sit anywhere under the source folder.
- **WebDataset shards** (``*.tar``): members grouped by key (the path up to the first dot of the
  file name), each sample an image (``key.jpg``/``.png``/``.webp``…) with its caption in
  ``key.txt`` or in ``key.json`` (``caption`` or ``text``, optionally ``url``). The key is the id.

Nothing vanishes: a caption row naming a missing image, an image file no caption row names, a
sample without caption or image, an empty, unreadable, truncated or oversized image, a missing,
empty or non-string caption, a malformed record, a corrupt shard and any other file become
quarantine rows with the reason, the file, the line, and the raw bytes (up to 16 MB).
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import BaseModel, Field

from refinery.ingest.text_reader import meta_json
from refinery.kernel.collector import MAX_RAW_FILE_BYTES, IngestBatch, RowCollector, matching_suffix
from refinery.kernel.report import counts_table
from refinery.kernel.surrogates import display_name, lone_surrogate, may_hold_surrogates
from refinery.multimodal.images import DEFAULT_MAX_PIXELS, IMAGE_SUFFIXES, image_hash, inspect_image
from refinery.multimodal.records import RECORD_SUFFIXES, BadRecord, first_field, inside, iter_records
from refinery.multimodal.schema import CAPTION_COLUMN, IMAGE_TEXT_QUARANTINE_SCHEMA, IMAGE_TEXT_SCHEMA

IMAGE_FIELDS = ("image", "image_path", "file_name", "path")
CAPTION_FIELDS = ("caption", "text")
SHARD_SUFFIXES = (".tar",)
SHARD_IMAGE_EXTS = tuple(s.lstrip(".") for s in IMAGE_SUFFIXES)
SHARD_CAPTION_EXTS = ("txt", "text", "caption")


class ImageTextIngestParams(BaseModel):
    """How the image–text inbox is read."""

    max_caption_chars: int = Field(10_000, description="Longer captions are quarantined as oversized.")
    max_image_bytes: int = Field(64 * 1024 * 1024, description="Larger image files are quarantined.")
    max_image_pixels: int = Field(
        DEFAULT_MAX_PIXELS, description="Decompression-bomb guard (width × height)."
    )
    batch_rows: int = Field(256, description="Pairs per batch handed to the writer (images are in the rows).")


class ImageTextReader(RowCollector):
    """Iterate :meth:`batches` (``documents`` hold pairs), then read :attr:`stats`.

    It walks the folder itself (images pair with caption tables and shards, so files are not
    independent records); batching and quarantine rows come from
    :class:`refinery.kernel.collector.RowCollector`.
    """

    SCHEMA = IMAGE_TEXT_SCHEMA
    QUARANTINE_SCHEMA = IMAGE_TEXT_QUARANTINE_SCHEMA
    TEXT_COLUMN = CAPTION_COLUMN

    def __init__(self, folder: Path, source: str, params: ImageTextIngestParams | None = None):
        super().__init__(folder, source, params or ImageTextIngestParams())
        self.formats: dict[str, int] = {}
        self._referenced: set[Path] = set()

    # -- public -------------------------------------------------------------------------------
    def batches(self) -> Iterator[IngestBatch]:
        images: list[tuple[Path, str]] = []
        for path, rel in self._files():
            if matching_suffix(path, RECORD_SUFFIXES):
                yield from self._read_table(path, rel)
            elif matching_suffix(path, SHARD_SUFFIXES):
                yield from self._read_shard(path, rel)
            elif matching_suffix(path, IMAGE_SUFFIXES):
                images.append((path, rel))  # decided once every table has been read
            else:
                self._quarantine_file(
                    path,
                    rel,
                    "unsupported_file_type",
                    f"expected images, a captions table ({', '.join(RECORD_SUFFIXES)}) or .tar shards",
                )
            yield from self._drain(final=False)
        for path, rel in images:
            if path.resolve() not in self._referenced:
                self._quarantine_file(path, rel, "missing_caption", "no captions table row names this image")
                yield from self._drain(final=False)
        yield from self._drain(final=True)

    # -- emitting -----------------------------------------------------------------------------
    def report(self) -> dict:
        return {"image_formats": counts_table(self.formats)}

    def summary(self) -> dict:
        return {"image_formats": dict(self.formats)}

    def _quarantine_file(self, path: Path, rel: str, reason: str, detail: str) -> None:
        size = path.stat().st_size
        raw = path.read_bytes() if size <= MAX_RAW_FILE_BYTES else None
        if raw is None:
            detail += f" (file of {size} bytes left in the inbox, not copied)"
        self._quarantine(
            rel, None, reason, detail, raw, image_file=rel if matching_suffix(path, IMAGE_SUFFIXES) else None
        )

    def _caption_problem(self, caption: object, has_field: bool) -> tuple[str, str] | None:
        if not has_field or caption is None:
            return "missing_caption", f"no caption field ({' or '.join(CAPTION_FIELDS)})"
        if not isinstance(caption, str):
            return "caption_not_string", f"caption is {type(caption).__name__}"
        if not caption.strip():
            return "missing_caption", "caption is empty or whitespace only"
        if len(caption) > self.params.max_caption_chars:
            return (
                "oversized",
                f"caption of {len(caption)} characters > max_caption_chars {self.params.max_caption_chars}",
            )
        return None

    def _admit(
        self,
        rel: str,
        line: int,
        record: dict,
        caption: str,
        image_file: str,
        data: bytes,
        raw: bytes,
        explicit_id: object,
        consumed: set[str],
    ) -> None:
        """Check the image bytes and the id, then add the pair (or quarantine it)."""
        if len(data) > self.params.max_image_bytes:
            detail = f"{len(data)} bytes > max_image_bytes {self.params.max_image_bytes}"
            self._quarantine(rel, line, "oversized_image", detail, None, text=caption, image_file=image_file)
            return
        info, problem = inspect_image(data, self.params.max_image_pixels)
        shown_id = None if explicit_id is None else str(explicit_id)
        if problem:
            self._quarantine(
                rel, line, problem[0], problem[1], data, doc_id=shown_id, text=caption, image_file=image_file
            )
            return
        if explicit_id is not None:
            row_id, error = self._ids.explicit(explicit_id)
            if error:
                self._quarantine(
                    rel, line, error.split(":")[0], error, raw, text=caption, image_file=image_file
                )
                return
        else:
            row_id = self._ids.derived(f"{image_file}\n{caption}")
        url = record.get("url")
        self.stats.files[rel] += 1
        self.stats.documents += 1
        self.formats[info.format] = self.formats.get(info.format, 0) + 1
        self._batch.documents.append(
            {
                "id": row_id,
                "caption": caption,
                "source": self.source,
                "url": None if url is None else str(url),
                "meta": meta_json(record, consumed),
                "file": rel,
                "line": line,
                "image_file": image_file,
                "image": data,
                "image_format": info.format,
                "width": info.width,
                "height": info.height,
                "image_hash": image_hash(data),
            }
        )

    # -- captions tables ----------------------------------------------------------------------
    def _read_table(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        base = path.parent
        for item in iter_records(path):
            if isinstance(item, BadRecord):
                self._quarantine(rel, item.line, item.reason, item.detail, item.raw)
                yield from self._drain(final=False)
                continue
            record, line, raw = item.record, item.line, item.raw
            rid = None if record.get("id") is None else str(record["id"])
            image_key, image_value = first_field(record, IMAGE_FIELDS)
            caption_key, caption = first_field(record, CAPTION_FIELDS)
            image_text = caption if isinstance(caption, str) else None
            if image_key is None or not isinstance(image_value, str):
                detail = (
                    f"no image field ({', '.join(IMAGE_FIELDS)})"
                    if image_key is None
                    else f"'{image_key}' is {type(image_value).__name__}, expected a path"
                )
                self._quarantine(rel, line, "missing_image", detail, raw, doc_id=rid, text=image_text)
                yield from self._drain(final=False)
                continue
            resolved, why = inside(self.folder, base, image_value)
            inbox = self.folder.resolve()
            image_file = display_name(resolved.relative_to(inbox).as_posix()) if resolved else image_value
            if resolved is not None:
                self._referenced.add(resolved)
            problem = self._caption_problem(caption, caption_key is not None)
            if why:
                self._quarantine(
                    rel,
                    line,
                    "image_outside_source",
                    why,
                    raw,
                    doc_id=rid,
                    text=image_text,
                    image_file=image_value,
                )
            elif problem:
                data = (
                    resolved.read_bytes()
                    if resolved.is_file() and resolved.stat().st_size <= MAX_RAW_FILE_BYTES
                    else raw
                )
                self._quarantine(
                    rel, line, problem[0], problem[1], data, text=image_text, image_file=image_file
                )
            elif not resolved.is_file():
                self._quarantine(
                    rel,
                    line,
                    "image_not_found",
                    f"{image_file} does not exist",
                    raw,
                    text=caption,
                    image_file=image_file,
                )
            else:
                consumed = {"id", "url", "meta", image_key, caption_key}
                self._admit(
                    rel,
                    line,
                    record,
                    caption,
                    image_file,
                    resolved.read_bytes(),
                    raw,
                    record.get("id"),
                    consumed,
                )
            yield from self._drain(final=False)

    # -- WebDataset shards --------------------------------------------------------------------
    def _read_shard(self, path: Path, rel: str) -> Iterator[IngestBatch]:
        samples = 0
        group_key: str | None = None
        members: dict[str, bytes] = {}
        try:
            with tarfile.open(path, mode="r|*") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    folder, _, base = member.name.rpartition("/")
                    stem, _, ext = base.partition(".")
                    key = display_name(f"{folder}/{stem}" if folder else stem)  # names need not be UTF-8
                    if key != group_key and group_key is not None:
                        samples += 1
                        self._shard_sample(rel, samples, group_key, members)
                        yield from self._drain(final=False)
                        members = {}
                    group_key = key
                    handle = tar.extractfile(member)
                    members[ext.lower()] = handle.read() if handle else b""
        # TypeError too: CPython's tarfile raises it for a gzip header cut short (ord() of b"").
        except (tarfile.TarError, EOFError, OSError, TypeError) as err:
            self._quarantine(
                rel,
                samples + 1,
                "corrupt_archive",
                f"stopped reading after {samples} samples: {err}",
                None,
                doc_id=group_key,
            )
            return
        if group_key is not None:
            samples += 1
            self._shard_sample(rel, samples, group_key, members)
            yield from self._drain(final=False)

    def _shard_sample(self, rel: str, number: int, key: str, members: dict[str, bytes]) -> None:
        image_ext = next((e for e in SHARD_IMAGE_EXTS if e in members), None)
        caption_ext = next((e for e in SHARD_CAPTION_EXTS if e in members), None)
        image_file = f"{rel}:{key}.{image_ext}" if image_ext else f"{rel}:{key}"
        raw_json = members.get("json")
        record: dict = {}
        if raw_json is not None:
            try:
                parsed = json.loads(raw_json.decode("utf-8"))
            except ValueError as err:  # undecodable, malformed, or an integer past 4300 digits
                self._quarantine(
                    rel,
                    number,
                    "malformed_json",
                    f"{key}.json: {err}",
                    raw_json,
                    doc_id=key,
                    image_file=image_file,
                )
                return
            if not isinstance(parsed, dict):
                self._quarantine(
                    rel, number, "not_an_object", f"{key}.json is not an object", raw_json, doc_id=key
                )
                return
            where = lone_surrogate(parsed) if may_hold_surrogates(raw_json) else None
            if where:  # valid JSON, but not text UTF-8 (and so Parquet) can hold
                detail = f"{key}.json: lone surrogate in {where[:200]}"
                self._quarantine(rel, number, "invalid_unicode", detail, raw_json, doc_id=key)
                return
            record = parsed
        caption: object = None
        has_caption = False
        if caption_ext is not None:
            try:
                caption = members[caption_ext].decode("utf-8-sig").strip("\r\n")
                has_caption = True
            except UnicodeDecodeError as err:
                self._quarantine(
                    rel,
                    number,
                    "undecodable_bytes",
                    f"{key}.{caption_ext} not UTF-8 at byte {err.start}",
                    members[caption_ext],
                    doc_id=key,
                    image_file=image_file,
                )
                return
        else:
            json_key, caption = first_field(record, CAPTION_FIELDS)
            has_caption = json_key is not None
        if image_ext is None:
            self._quarantine(
                rel,
                number,
                "missing_image",
                f"sample {key} has no image (members: {sorted(members)})",
                raw_json or members.get(caption_ext or ""),
                doc_id=key,
                text=caption if isinstance(caption, str) else None,
            )
            return
        problem = self._caption_problem(caption, has_caption)
        if problem:
            self._quarantine(
                rel, number, problem[0], problem[1], members[image_ext], doc_id=key, image_file=image_file
            )
            return
        others = sorted(e for e in members if e not in (image_ext, caption_ext, "json"))
        if others:
            record = {**record, "shard_members": others}
        consumed = {"id", "url", "meta", "caption", "text", "key"}
        raw = raw_json or members[image_ext]
        self._admit(rel, number, record, caption, image_file, members[image_ext], raw, key, consumed)
