"""The unpartitioned assets built from the corpus (tokenizer, domain weights, splits, mixture,
schedule, training tokens) on any storage root: a local folder or an object store.

These assets are single tables (``<root>/<asset>/<name>.parquet``), single files
(``tokenizer.json``) and folders of shards with an ``index.json`` that a training loader reads
first (``training_schedule/shards``, ``training_tokens/shards``). Their writers (DuckDB, the
Megatron and litdata writers, Hugging Face tokenizers) write local files, so a folder is always
built in a local staging folder, then committed:

- on a local root, as before: fsynced and swapped in by renames, the old folder removed;
- on an object store, which has no atomic rename: the old ``index.json`` is deleted first (from
  then on a loader finds no shards and says "materialize it first", never a mix of two runs), every
  file is uploaded, files of the old run that the new one lacks are deleted, and ``index.json`` is
  uploaded **last: the commit point**. A run that fails on the way leaves no index (rerun it).

Single files and tables are one object each on an object store (an upload appears whole or not at
all); the table that carries an asset's provenance is written after the files it describes, so
whoever finds it finds them. Readers here take either storage and read through its filesystem.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import exists, join, listing
from refinery.object_storage import ObjectStorage
from refinery.storage import REJECTED_DIR, Storage
from refinery.tempfiles import clean_stray, fsync_dir, fsync_tree, publish_file, temp_path

INDEX_FILE = "index.json"
AnyStorage = Storage | ObjectStorage


def is_object(storage: AnyStorage) -> bool:
    return isinstance(storage, ObjectStorage)


def asset_folder(storage: AnyStorage, asset: str) -> str:
    """The folder of an unpartitioned asset, as a path on ``storage.fs``."""
    if is_object(storage):
        return join(storage.base, asset)
    return str(Path(storage.root).expanduser().resolve() / asset)


def shown(storage: AnyStorage, path: str | Path) -> str:
    """A path as the metadata shows it: the local path, or ``s3://bucket/key``."""
    return storage.uri(str(path)) if is_object(storage) else str(path)


def local_root(storage: AnyStorage) -> Path:
    """Where a stage keeps scratch of its own that tools read as local files (the SFT selection's
    plan): the root itself when local; for an object-store root, a folder in the system's temp space
    (``$TMPDIR``) named after the root. Scratch is local whatever the root (docs/running.md)."""
    if not is_object(storage):
        return Path(storage.root)
    key = hashlib.sha256(storage.root.encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"refinery-scratch-{key}"


def partition_identity(storage: AnyStorage, asset: str, partition: str) -> object:
    """What fixes a partition's content, for fingerprints: its location (whose files' names and
    sizes the caller reads) on a local root, the manifest's version on an object store."""
    if is_object(storage):
        storage.require(asset, partition)
        return storage.manifest(asset, partition)["version"]
    return storage.require(asset, partition)


# -- tables --------------------------------------------------------------------------------------
def read_table(
    storage: AnyStorage, asset: str, name: str | None = None, columns: list[str] | None = None
) -> pa.Table:
    """An unpartitioned asset's table (a clear error when it was never materialized)."""
    path = storage.require_table(asset, name)
    if is_object(storage):
        return pq.read_table(path, columns=columns, filesystem=storage.fs)
    return pq.read_table(path, columns=columns)


def read_frame(
    storage: AnyStorage, asset: str, name: str | None = None, columns: list[str] | None = None
) -> pd.DataFrame:
    return read_table(storage, asset, name, columns).to_pandas()


def table_exists(storage: AnyStorage, asset: str, name: str | None = None) -> bool:
    path = storage.table_path(asset, name)
    return exists(storage.fs, path) if is_object(storage) else Path(path).exists()


def table_size(storage: AnyStorage, path: str | Path) -> int:
    """Bytes of a table or file written by :func:`put_file` or ``write_table``."""
    if is_object(storage):
        return int(storage.fs.get_file_info(str(path)).size or 0)
    return Path(path).stat().st_size


def dataset(storage: AnyStorage, files: list) -> ds.Dataset:
    """Parquet files of ``storage`` (a partition's parts, or a table) as one dataset."""
    if is_object(storage):
        return ds.dataset([str(f) for f in files], format="parquet", filesystem=storage.fs)
    return ds.dataset([str(f) for f in files], format="parquet")


def register_files(con, storage: AnyStorage, name: str, files: list, columns: dict[str, str]) -> None:
    """A DuckDB view ``name`` of ``columns`` over Parquet ``files`` of ``storage`` (an empty table of
    those columns when there are none). On a local root DuckDB reads the files itself; on an object
    store it scans a :mod:`pyarrow.dataset` opened through the root's filesystem (DuckDB's own
    ``s3://`` reading needs its httpfs extension, downloaded at run time)."""
    from refinery.sql_views import dataset_of
    from refinery.storage import parquet_view

    if not is_object(storage) or not files:
        parquet_view(con, name, [str(f) for f in files], columns)
        return
    con.register(f"{name}_files", dataset_of(storage.fs, [str(f) for f in files]))
    con.execute(f"CREATE TEMP VIEW {name} AS SELECT {', '.join(columns)} FROM {name}_files")


def rejected_partitions(storage: AnyStorage, asset: str) -> list[str]:
    """The partitions of an asset that have a quarantine (rejected rows)."""
    if is_object(storage):
        folder = join(storage.base, REJECTED_DIR, asset)
        return [i.base_name for i in listing(storage.fs, folder) if i.type == pafs.FileType.Directory]
    folder = Path(storage.rejected_path(asset, "x")).parent
    if not folder.is_dir():
        return []
    return sorted(
        {p.stem for p in folder.glob("*.parquet")} | {p.name for p in folder.iterdir() if p.is_dir()}
    )


# -- single files --------------------------------------------------------------------------------
def file_path(storage: AnyStorage, asset: str, name: str) -> str | Path:
    """Where an asset keeps a file of its own (``<root>/<asset>/<name>``)."""
    if is_object(storage):
        return join(asset_folder(storage, asset), name)
    return Path(storage.root) / asset / name


def put_file(storage: AnyStorage, asset: str, local: Path, name: str) -> str | Path:
    """Move the finished local file ``local`` to ``<root>/<asset>/<name>``: renamed into place on a
    local root (``local`` must be beside it), uploaded whole to an object store (``local`` removed)."""
    target = file_path(storage, asset, name)
    if not is_object(storage):
        publish_file(local, Path(target))
        return target
    try:
        _upload(storage.fs, local, str(target))
    finally:
        local.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            local.parent.rmdir()  # local_scratch's temp folder, when it made one
    return target


def read_bytes(storage: AnyStorage, asset: str, name: str) -> bytes | None:
    """The content of an asset's file, or None when there is none."""
    path = file_path(storage, asset, name)
    if not is_object(storage):
        return Path(path).read_bytes() if Path(path).is_file() else None
    try:
        with storage.fs.open_input_stream(str(path)) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def local_scratch(storage: AnyStorage, asset: str, name: str) -> Path:
    """A local temporary path for a file that :func:`put_file` will publish as ``name``: beside its
    target on a local root (the rename stays atomic), in the system's temp folder otherwise."""
    if not is_object(storage):
        target = Path(file_path(storage, asset, name))
        target.parent.mkdir(parents=True, exist_ok=True)
        return temp_path(target)
    return Path(tempfile.mkdtemp(prefix=f"refinery-{asset}-")) / name


# -- folders of shards with an index -------------------------------------------------------------
def folder_staging(storage: AnyStorage, asset: str, name: str = "shards") -> Path:
    """A new local folder to build ``<root>/<asset>/<name>`` in: beside it on a local root (swept by
    :func:`refinery.tempfiles.clean_stray` if the writer is killed), a temp folder otherwise."""
    if is_object(storage):
        return Path(tempfile.mkdtemp(prefix=f"refinery-{asset}-")) / name
    root = Path(asset_folder(storage, asset))
    root.mkdir(parents=True, exist_ok=True)
    clean_stray(root)  # staging folders of killed runs
    staging = temp_path(root / name)
    staging.mkdir(parents=True)
    return staging


def discard_staging(storage: AnyStorage, staging: Path) -> None:
    shutil.rmtree(staging.parent if is_object(storage) else staging, ignore_errors=True)


def commit_folder(storage: AnyStorage, asset: str, staging: Path, name: str = "shards") -> str | Path:
    """Publish the complete local folder ``staging`` (which holds ``index.json``) as
    ``<root>/<asset>/<name>``; returns where it is (a local path, or a path on ``storage.fs``)."""
    if not (staging / INDEX_FILE).is_file():
        raise FileNotFoundError(f"{staging} has no {INDEX_FILE}: nothing to commit")
    if not is_object(storage):
        final = Path(asset_folder(storage, asset)) / name
        fsync_tree(staging)  # every shard durable before the folder becomes visible
        old = temp_path(final, "old")
        if final.exists():
            os.replace(final, old)
        os.replace(staging, final)
        fsync_dir(final.parent)
        shutil.rmtree(old, ignore_errors=True)
        return final
    try:
        return _upload_folder(storage.fs, staging, join(asset_folder(storage, asset), name))
    finally:
        discard_staging(storage, staging)


def _upload(filesystem: pafs.FileSystem, local: Path, path: str) -> None:
    with open(local, "rb") as source, filesystem.open_output_stream(path) as out:
        shutil.copyfileobj(source, out, 8 << 20)


def _upload_folder(filesystem: pafs.FileSystem, staging: Path, folder: str) -> str:
    """Old index out, files up, stale files out, new index up (the commit point)."""
    index = join(folder, INDEX_FILE)
    if exists(filesystem, index):
        filesystem.delete_file(index)
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p != staging / INDEX_FILE)
    names = {p.relative_to(staging).as_posix() for p in files}
    for local in files:
        _upload(filesystem, local, join(folder, local.relative_to(staging).as_posix()))
    for info in listing(filesystem, folder, recursive=True):
        relative = info.path[len(folder) :].lstrip("/")
        if info.type == pafs.FileType.File and relative not in names and relative != INDEX_FILE:
            filesystem.delete_file(info.path)
    _upload(filesystem, staging / INDEX_FILE, index)
    return folder
