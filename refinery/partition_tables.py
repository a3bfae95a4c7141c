"""A partition's side table on any storage root: one table per partition, no quarantine, written whole
by one process (``document_embeddings``: a vector per upstream document).

On a local root it is one file, ``<root>/<asset>/<partition>.parquet``, written to a temporary name
and renamed into place. On an object store (no atomic rename) it is the partition layout of
:mod:`refinery.object_storage`: parts named after the run, then ``_manifest.json``, the commit point.
Readers take the committed files (:func:`table_files`) and open them through the root's filesystem
(``storage.fs``), so semantic dedup, the vector index and the checks read either layout alike; the
version (:func:`table_version`) says when the rows changed: the manifest's content hash on an object
store, the file's identity (inode, size, modification time) on a local root, whose files are replaced whole.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, Self

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.object_storage import ObjectStorage, ObjectTableWriter
from refinery.storage import Storage, replace_partition
from refinery.tempfiles import clean_stray, fsync_file, temp_path


class TableWriter(Protocol):
    """Streams one partition's table; nothing is visible before :meth:`commit`."""

    @property
    def path(self) -> str | Path: ...

    def write(self, table: pa.Table) -> None: ...

    def commit(self) -> object: ...

    def abort(self) -> None: ...


class LocalTableWriter:
    """The local layout: one Parquet file, written beside its target and renamed over it."""

    def __init__(self, storage: Storage, asset: str, partition: str, schema: pa.Schema):
        self.target = storage.path(asset, partition)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        clean_stray(self.target.parent)  # temporaries of writers that died
        self.temp = temp_path(self.target)
        self._writer = pq.ParquetWriter(self.temp, schema, compression="zstd")

    @property
    def path(self) -> Path:
        return self.target

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def commit(self) -> Path:
        """The file, renamed into place; the partition's parts folder, if an earlier run on workers
        wrote one, removed (one layout at a time: readers would otherwise find both)."""
        self._writer.close()
        fsync_file(self.temp)
        replace_partition(self.temp, self.target, self.target.with_suffix(""))
        return self.target

    def abort(self) -> None:
        self._writer.close()
        self.temp.unlink(missing_ok=True)


class PartitionTable:
    """``with PartitionTable(storage, asset, partition, schema, provenance) as out: out.write(t)``:
    committed when the block ends without error, discarded when it raises."""

    def __init__(
        self,
        storage: Storage | ObjectStorage,
        asset: str,
        partition: str,
        schema: pa.Schema,
        provenance: dict,
    ):
        self.writer: TableWriter = (
            ObjectTableWriter(storage, asset, partition, schema, provenance)
            if isinstance(storage, ObjectStorage)
            else LocalTableWriter(storage, asset, partition, schema)
        )

    @property
    def path(self) -> str | Path:
        """The partition's file (local) or folder URI (object store): what the metadata shows."""
        return self.writer.path

    def write(self, table: pa.Table) -> None:
        self.writer.write(table)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if kind is None:
            self.writer.commit()
        else:
            self.writer.abort()


def table_files(storage: Storage | ObjectStorage, asset: str, partition: str) -> list[str]:
    """The committed files of the partition's table, in row order, as paths on ``storage.fs``
    (none when it was never written)."""
    return [str(f) for f in storage.files(asset, partition)]


def table_location(storage: Storage | ObjectStorage, asset: str, partition: str) -> str:
    """Where the partition's table is (or would be), as a person names it."""
    if isinstance(storage, ObjectStorage):
        return storage.uri(storage.parts_path(asset, partition))
    return str(storage.path(asset, partition))


def table_version(storage: Storage | ObjectStorage, asset: str, partition: str) -> str | None:
    """What changes when the partition's rows change: the manifest's version (object store), or the
    file's inode, size and modification time (local: files are replaced whole, by rename)."""
    if isinstance(storage, ObjectStorage):
        manifest = storage.manifest(asset, partition)
        return manifest["version"] if manifest else None
    files = storage.files(asset, partition)
    if not files:
        return None
    stamps = []
    for f in files:
        st = Path(f).stat()
        stamps.append(f"{st.st_ino}-{st.st_size}-{st.st_mtime_ns}")
    return "/".join(stamps)


def read_schema(storage: Storage | ObjectStorage, files: list[str]) -> pa.Schema:
    """The schema (with its provenance metadata) of a table's first file."""
    return pq.read_schema(files[0], filesystem=storage.fs)
