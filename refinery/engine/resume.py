"""What lets a retried step skip the slices it already wrote: fingerprints, done markers, and
staging folders that survive a failed attempt.

A stage split over workers writes one part per slice into a staging folder and commits the folder
as a whole (:class:`refinery.storage.PartsWriter`). When the attempt fails (a worker's exception, a
lost node, a killed step), what it wrote stays: the staging folder is named by a **fingerprint**
of everything that decides its parts (the stage, the source, the upstream's data version, the
slice plan, the provenance with the parameters and the model), so the retry, which computes the
same fingerprint, finds it and skips every slice whose **done marker** is there. A worker writes
the marker after both of its slice's parts, with their sizes and its slice's statistics, and a
marker counts only when the parts it names are there with those sizes. Anything that changes the
fingerprint (new upstream rows, other parameters, another slice size) starts clean: the staging
folders of other fingerprints of that stage and partition are removed first.

Two runs of the same partition with the same fingerprint at the same time would share a staging
folder; Dagster does not run a partition's step twice at once, and both would write the same
bytes under the same names.
"""

from __future__ import annotations

import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pyarrow.fs as pafs

from refinery.engine.root_folder import RootFolder
from refinery.fingerprints import fingerprint
from refinery.fs import child, file_sizes, is_local, listing
from refinery.manifest import read_manifest, read_manifest_at
from refinery.storage import PartsWriter, Storage, parquet_files

SCRATCH_DIR = "_staging"  # beside the assets: pass-one columns (scores, signatures) by fingerprint
TOKEN_PREFIX = "retry-"


def data_version(location: Path | str) -> str:
    """The upstream's data version: its manifest's hash where it has one, else the names, sizes
    and modification times of its files (a rewritten upstream, even with the same rows, starts a
    retry clean; that errs on the safe side). ``location`` may be an object store URI (its
    partitions always have a manifest)."""
    if isinstance(location, str) and not is_local(location):
        folder = RootFolder(location)
        manifest = read_manifest_at(folder.fs, folder.path)
        if not manifest:
            raise FileNotFoundError(f"no committed output at {location.partition('?')[0]}")
        return str(manifest["version"])
    location = Path(location)
    if location.is_dir():
        manifest = read_manifest(location)
        if manifest and manifest.get("version"):
            return str(manifest["version"])
    files = parquet_files(location)
    return fingerprint([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def marker_name(index: int) -> str:
    return f".{PartsWriter.part_name(index)}.done"


def marker_path(folder: Path, index: int) -> Path:
    return Path(folder) / marker_name(index)


def write_marker(folder: Path | str | RootFolder, index: int, files: Iterable[Path | str], info: Any) -> None:
    """Slice ``index`` is complete: ``files`` (its parts, written before: paths on the folder's
    filesystem) and what the driver needs of it (its statistics, its summary), atomically (a
    local file renamed into place, or one object)."""
    where = RootFolder.of(folder)
    names = [str(f) for f in files]
    body = {"files": dict(zip(names, file_sizes(where.fs, names), strict=True)), "info": info}
    where.write_bytes(marker_name(index), pickle.dumps(body))


def read_marker(folder: Path | str | RootFolder, index: int) -> Any | None:
    """The info of a complete slice, or None when it has no marker or its parts are not what the
    marker names (then it is redone)."""
    where = RootFolder.of(folder)
    raw = where.read_bytes(marker_name(index))
    if raw is None:
        return None
    try:
        body = pickle.loads(raw)
    except Exception:  # a marker from another version of the code: redo the slice
        return None
    names = list(body["files"])
    if file_sizes(where.fs, names) != [body["files"][n] for n in names]:
        return None
    return body["info"]


def remove_markers(folder: Path) -> None:
    for marker in folder.glob(".part-*.done"):
        marker.unlink(missing_ok=True)


class ResumableParts(PartsWriter):
    """A :class:`PartsWriter` whose staging folders are named by a fingerprint and kept after a
    failed attempt, so the retry finds the slices already written (see the module docstring)."""

    def __init__(self, storage: Storage, asset: str, partition: str, key: str):
        super().__init__(storage, asset, partition, token=f"{TOKEN_PREFIX}{key}")
        self.key = key
        for rejected in (False, True):  # another fingerprint's leftovers: start clean
            final = self.storage.parts_path(asset, partition, rejected)
            for old in final.parent.glob(f".{final.name}.parts.{TOKEN_PREFIX}*.tmp"):
                if old != self.staging(rejected):
                    shutil.rmtree(old, ignore_errors=True)

    def done(self, index: int) -> Any | None:
        return read_marker(self.staging(False), index)

    def mark_done(self, index: int, info: Any) -> None:
        files = [self.staging(r) / self.part_name(index) for r in (False, True)]
        write_marker(self.staging(False), index, files, info)

    def commit(self, parts: int) -> tuple[Path, Path]:
        remove_markers(self.staging(False))
        return super().commit(parts)


def scratch_relative(asset: str, partition: str, purpose: str, key: str) -> str:
    """A scratch folder's path under the storage root (what a provenance stamp records)."""
    return f"{SCRATCH_DIR}/{asset}/{partition}/{purpose}-{key}"


def scratch_path(storage: Any, asset: str, partition: str, purpose: str, key: str) -> Path | str:
    """``<storage>/_staging/<asset>/<partition>/<purpose>-<key>/``: where a step keeps pass-one
    parts (the perplexities, the MinHash signatures) across attempts under their fingerprint. On
    an object store root, a URI with the root's options (every worker reads and writes it)."""
    return under_root(storage, scratch_relative(asset, partition, purpose, key))


def under_root(storage: Any, relative: str) -> Path | str:
    """A folder under the storage root: a local path, or (an object store root) a URI keeping the
    root's query, so a worker opens the same filesystem from it."""
    root = storage.root
    if isinstance(root, Path):
        return root / relative
    return child(str(root), *relative.split("/"))


def scratch_folder(storage: Any, asset: str, partition: str, purpose: str, key: str) -> Path | str:
    """:func:`scratch_path`, created; the same purpose's folders of other fingerprints are
    removed first (a changed input starts clean)."""
    folder = scratch_path(storage, asset, partition, purpose, key)
    if isinstance(folder, str):
        base = RootFolder(_parent_uri(folder))
        for name in _subfolders(base):
            if name.startswith(f"{purpose}-") and name != f"{purpose}-{key}":
                base.sub(name).remove()
        return folder
    base = folder.parent
    if base.is_dir():
        for old in base.glob(f"{purpose}-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _parent_uri(uri: str) -> str:
    head, _, query = uri.partition("?")
    return head.rstrip("/").rsplit("/", 1)[0] + (f"?{query}" if query else "")


def _subfolders(folder: RootFolder) -> list[str]:
    return [i.base_name for i in listing(folder.fs, folder.path) if i.type == pafs.FileType.Directory]


def remove_scratch(folder: Path | str) -> None:
    """Drop a step's pass-one parts once its output is committed (and empty parents)."""
    if isinstance(folder, str) and not is_local(folder):
        RootFolder(folder).remove()  # an object store has no empty folders to drop
        return
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break
