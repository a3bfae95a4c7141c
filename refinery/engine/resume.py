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

import hashlib
import json
import pickle
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from refinery.manifest import read_manifest
from refinery.storage import PartsWriter, Storage, parquet_files
from refinery.tempfiles import publish_file, temp_path

SCRATCH_DIR = "_staging"  # beside the assets: pass-one columns (scores, signatures) by fingerprint
TOKEN_PREFIX = "retry-"


def fingerprint(*parts: Any) -> str:
    """A short stable hash of JSON-able values."""
    canonical = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(canonical).hexdigest()[:16]


def data_version(location: Path) -> str:
    """The upstream's data version: its manifest's hash where it has one, else the names, sizes
    and modification times of its files (a rewritten upstream, even with the same rows, starts a
    retry clean; that errs on the safe side)."""
    if location.is_dir():
        manifest = read_manifest(location)
        if manifest and manifest.get("version"):
            return str(manifest["version"])
    files = parquet_files(location)
    return fingerprint([(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


def marker_path(folder: Path, index: int) -> Path:
    return folder / f".{PartsWriter.part_name(index)}.done"


def write_marker(folder: Path, index: int, files: Iterable[Path], info: Any) -> None:
    """Slice ``index`` is complete: ``files`` (its parts, written before) and what the driver needs
    of it (its statistics, its summary), atomically."""
    body = {"files": {str(f): f.stat().st_size for f in files}, "info": info}
    target = marker_path(folder, index)
    temp = temp_path(target)
    temp.write_bytes(pickle.dumps(body))
    publish_file(temp, target)


def read_marker(folder: Path, index: int) -> Any | None:
    """The info of a complete slice, or None when it has no marker or its parts are not what the
    marker names (then it is redone)."""
    path = marker_path(folder, index)
    if not path.is_file():
        return None
    try:
        body = pickle.loads(path.read_bytes())
    except Exception:  # a marker from another version of the code: redo the slice
        return None
    for name, size in body["files"].items():
        file = Path(name)
        if not file.is_file() or file.stat().st_size != size:
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


def scratch_path(storage: Storage, asset: str, partition: str, purpose: str, key: str) -> Path:
    """``<storage>/_staging/<asset>/<partition>/<purpose>-<key>/``: where a step keeps pass-one
    parts (the perplexities, the MinHash signatures) across attempts under their fingerprint."""
    return storage.root / SCRATCH_DIR / asset / partition / f"{purpose}-{key}"


def scratch_folder(storage: Storage, asset: str, partition: str, purpose: str, key: str) -> Path:
    """:func:`scratch_path`, created; the same purpose's folders of other fingerprints are
    removed first (a changed input starts clean)."""
    folder = scratch_path(storage, asset, partition, purpose, key)
    base = folder.parent
    if base.is_dir():
        for old in base.glob(f"{purpose}-*"):
            if old != folder:
                shutil.rmtree(old, ignore_errors=True)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def remove_scratch(folder: Path) -> None:
    """Drop a step's pass-one parts once its output is committed (and empty parents)."""
    shutil.rmtree(folder, ignore_errors=True)
    for parent in (folder.parent, folder.parent.parent):
        try:
            parent.rmdir()
        except OSError:
            break
