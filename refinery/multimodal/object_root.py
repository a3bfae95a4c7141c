"""The image-text and video stages on an object-store root (``s3://…``).

Two things in these stages need local files, whatever the root:

- CLIP scoring and the CLIP filter read their upstream partition by path (a DataLoader's worker
  processes each open the Parquet files and decode the images by row group, and the filter plans from
  the score column): on an object store the partition's committed parts (those its manifest lists)
  are first **staged as a local copy** (one Parquet file) in the system's temp space (``$TMPDIR``),
  read from there, and removed when the stage ends. The copy costs the partition's size in local
  disk for the stage's duration, and one download;
- the keyframe stages write the chosen frames as JPEG files (decord decodes the videos from the
  inbox, which is local anyway): they are written to a local staging folder and, when the stage
  succeeds, uploaded under ``<root>/<asset>/<source>/<video_id>/`` (the same keys as the local
  layout's paths, relative to the root), the frames of an earlier run that this one did not keep
  deleted. The rows' ``frame_paths`` name them relative to the root, as on a local root.
  On the ``ray`` engine the frames are chosen by tasks on the workers, which cannot write into the
  step's local folder: they upload them to a staging folder of the run under the root
  (:class:`StagedFrameStore`), which the step publishes under the same keys (server-side copies)
  before it writes the manifests, the commit point; the frames that no row of the new output names
  are deleted after it.

A local root keeps the local behaviour exactly (its paths, its renames).
"""

from __future__ import annotations

import contextlib
import io
import shutil
import tempfile
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import pyarrow.fs as pafs
import pyarrow.parquet as pq
from PIL import Image

from refinery.engine.model_stages import SCRATCH
from refinery.engine.root_folder import RootFolder
from refinery.fs import child, iter_parquet_batches, join, listing
from refinery.multimodal.keyframes import FrameStore
from refinery.table_store import AnyStorage, is_object


@contextlib.contextmanager
def local_partition(storage: AnyStorage, asset: str, partition: str) -> Iterator[Path]:
    """The partition's output as a local path: its own location on a local root; on an object store
    a local file holding the committed parts' rows in manifest order (one part: its bytes, copied;
    several: their row groups, streamed into one file), removed after."""
    if not is_object(storage):
        yield storage.require(asset, partition)
        return
    storage.require(asset, partition)
    scratch = Path(tempfile.mkdtemp(prefix=f"refinery-{asset}-{partition}-"))
    try:
        target = scratch / f"{partition}.parquet"
        parts = storage.files(asset, partition)
        if len(parts) == 1:
            with storage.fs.open_input_stream(parts[0]) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 8 << 20)
        else:
            with pq.ParquetWriter(target, storage.schema(asset, partition)) as writer:
                for batch in iter_parquet_batches(storage.fs, parts, 1024):
                    writer.write_batch(batch)
        yield target
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


class UploadedFrameStore(FrameStore):
    """A :class:`FrameStore` whose frames are written locally, then uploaded to the object store on
    commit (stale frames of an earlier run deleted); nothing is uploaded if the stage fails."""

    def __init__(self, storage: AnyStorage, asset: str, source: str):
        self.storage = storage
        self._scratch = Path(tempfile.mkdtemp(prefix=f"refinery-{asset}-frames-"))
        # The local copy serves open() (the report's samples) after the upload; it goes with the store.
        weakref.finalize(self, shutil.rmtree, self._scratch, True)
        super().__init__(self._scratch, asset, source)

    def commit(self) -> None:
        super().commit()  # the local staging folder renamed to its final local name, then uploaded
        fs, folder = self.storage.fs, join(self.storage.base, self.relative.as_posix())
        try:
            names = set()
            for local in sorted(p for p in self.final.rglob("*") if p.is_file()):
                name = local.relative_to(self.final).as_posix()
                names.add(name)
                with open(local, "rb") as source, fs.open_output_stream(join(folder, name)) as out:
                    shutil.copyfileobj(source, out, 8 << 20)
            delete_stale_frames(fs, folder, names)
        except BaseException:
            shutil.rmtree(self._scratch, ignore_errors=True)
            raise

    def abort(self) -> None:
        super().abort()
        shutil.rmtree(self._scratch, ignore_errors=True)


def delete_stale_frames(fs: pafs.FileSystem, folder: str, names: set[str]) -> None:
    """The frames under ``folder``'s video folders that ``names`` (relative to ``folder``) does not
    list: those of videos and runs the new output did not keep."""
    for video in listing(fs, folder):
        if video.type != pafs.FileType.Directory:
            continue  # the partition's own parts and manifest
        for info in listing(fs, video.path, recursive=True):
            relative = info.path[len(folder) :].lstrip("/")
            if info.type == pafs.FileType.File and relative not in names:
                fs.delete_file(info.path)


def frame_store(storage: AnyStorage, asset: str, source: str) -> FrameStore:
    """The frame folder of a keyframe stage's partition on ``storage``'s root."""
    if is_object(storage):
        return UploadedFrameStore(storage, asset, source)
    return FrameStore(storage.root, asset, source)


class StagedFrameStore:
    """The :class:`FrameStore` interface for the ``ray`` engine on an object store: workers upload
    each chosen frame to ``<root>/.model_pool/frames-<run>/<video_id>/``; the step then publishes
    them to ``<root>/<asset>/<source>/<video_id>/`` (what ``frame_paths`` names) before the
    manifests are written, and :meth:`commit` deletes the frames no row of the new output names and
    the staging folder. It travels to the workers as names only (the root's URI with its query)."""

    def __init__(self, storage: AnyStorage, asset: str, source: str):
        self.relative = Path(asset) / source
        self.final = storage.uri(join(storage.base, asset, source))  # shown: no query, no key
        self.folder = child(storage.root, asset, source)
        self.staging = child(storage.root, SCRATCH, f"frames-{uuid.uuid4().hex[:12]}")
        self.written = 0
        self._published: set[str] | None = None

    def write(self, video_id: str, index: int, jpeg: bytes) -> str:
        """Upload one frame's JPEG to the staging folder; returns its path relative to the root."""
        name = f"{video_id}/{index:06d}.jpg"
        RootFolder(self.staging).write_bytes(name, jpeg)
        self.written += 1
        return f"{self.relative.as_posix()}/{name}"

    def staged(self) -> list[str]:
        """The staged frames, relative to the staging folder."""
        staging = RootFolder(self.staging)
        return [
            i.path[len(staging.path) :].lstrip("/")
            for i in listing(staging.fs, staging.path, recursive=True)
            if i.type == pafs.FileType.File
        ]

    def stored(self) -> int:
        return len(self.staged())

    def open(self, relative: str) -> Image.Image:
        """A stored frame, before or after :meth:`publish`."""
        inner = Path(relative).relative_to(self.relative).as_posix()
        data = RootFolder(self.staging).read_bytes(inner) or RootFolder(self.folder).read_bytes(inner)
        if data is None:
            raise FileNotFoundError(f"frame {relative} is neither staged nor published")
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")

    def publish(self) -> None:
        """Every staged frame copied to its key under the frame folder (copies on the store)."""
        staging, folder = RootFolder(self.staging), RootFolder(self.folder)
        names = self.staged()
        for name in names:
            staging.fs.copy_file(staging.file(name), folder.file(name))
        self._published = set(names)

    def commit(self) -> None:
        """After the manifests: the frames of videos and runs this one did not keep go, then the
        staging folder."""
        if self._published is None:
            self.publish()
        folder = RootFolder(self.folder)
        delete_stale_frames(folder.fs, folder.path, self._published or set())
        RootFolder(self.staging).remove()

    def abort(self) -> None:
        RootFolder(self.staging).remove()


def pooled_frame_store(storage: AnyStorage, asset: str, source: str) -> FrameStore | StagedFrameStore:
    """The frame folder that a keyframe stage's tasks on the ``ray`` engine write into: a local
    root's staging folder (moved beside the parts by the step), or on an object store a staging
    folder under the root (:class:`StagedFrameStore`)."""
    if is_object(storage):
        return StagedFrameStore(storage, asset, source)
    return FrameStore(storage.root, asset, source)
