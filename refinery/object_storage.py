"""Asset partitions on an object store (``s3://bucket/prefix``…), through :mod:`pyarrow.fs`.

An object store has no atomic rename, so the local layout's commit (a temporary file or staging
folder renamed into place) does not carry over. Here a partition is ``<root>/<asset>/<partition>/``
(its quarantine ``<root>/rejected/<asset>/<partition>/``) holding parts named after the run that
wrote them (``part-00000-<run>.parquet``) and ``_manifest.json``, which lists them and is written
last: the manifest is the commit point. Readers read only the parts the current manifest lists, so a
run in progress or one that died is never seen, and the parts of older runs are deleted once a newer
manifest replaces theirs.

Who writes this layout: a stage that streams a partition from one process (:meth:`ObjectStorage.writer`,
:class:`ObjectPartitionWriter`: the ingest and every row stage on the local engine) and ingest on a
distributed engine (one task per file or range, :mod:`refinery.kernel.ingest_tasks`). Unpartitioned
tables are one object each (an upload appears whole or not at all). The readers (rows, batches,
counts, schema, provenance, partitions, stats), the invariant checks, DuckDB views
(:mod:`refinery.sql_views`) read it through the same filesystem. What still needs a local root is
listed in docs/running.md.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import child, exists, is_local, join, listing, split_root, uri
from refinery.manifest import MANIFEST, read_manifest_at, write_manifest_at
from refinery.paths import check_source_name
from refinery.storage import (
    DEFAULT_BATCH_ROWS,
    PROVENANCE_KEY,
    REJECTED_DIR,
    STATS_DIR,
    RowsAndRejections,
    Storage,
    stamped,
)
from refinery.tempfiles import temp_path

PART_BYTES = 512 << 20  # a part closes past this size: objects stay far below multipart upload limits


def open_storage(root: str) -> Storage | ObjectStorage:
    """The storage of a root: a local folder or ``file://`` URI (:class:`Storage`, every stage), or an
    object store URI (:class:`ObjectStorage`: ingest's parts and the readers)."""
    return Storage(root) if is_local(root) else ObjectStorage(root)


class ObjectStorage:
    """Readers of asset partitions under a storage root URI (the manifest's parts only)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.base = split_root(root)

    def __getstate__(self) -> dict:
        """Only the root travels (to a cluster's workers): a filesystem object need not pickle and
        would carry this process's credentials; the worker opens the filesystem from the URI."""
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    def location_uri(self, asset: str, partition: str, rejected: bool = False) -> str:
        """The partition's folder as a URI with the root's query (a worker opens the filesystem from
        it: :func:`refinery.engine.slices.plan_slices`)."""
        relative = [REJECTED_DIR, asset] if rejected else [asset]
        return child(self.root, *relative, check_source_name(partition))

    def parts_path(self, asset: str, partition: str, rejected: bool = False) -> str:
        folder = join(self.base, REJECTED_DIR, asset) if rejected else join(self.base, asset)
        return join(folder, check_source_name(partition))

    def manifest(self, asset: str, partition: str, rejected: bool = False) -> dict | None:
        return read_manifest_at(self.fs, self.parts_path(asset, partition, rejected))

    def version(self, asset: str, partition: str) -> str:
        """The committed output's data version: its manifest's hash (see :meth:`Storage.version`)."""
        manifest = self.manifest(asset, partition)
        if not manifest:
            raise FileNotFoundError(
                f"no committed output of '{asset}' for partition '{partition}' under {self.root}"
            )
        return str(manifest["version"])

    def location(self, asset: str, partition: str, rejected: bool = False) -> str | None:
        folder = self.parts_path(asset, partition, rejected)
        return folder if exists(self.fs, join(folder, MANIFEST)) else None

    def files(self, asset: str, partition: str, rejected: bool = False) -> list[str]:
        manifest = self.manifest(asset, partition, rejected)
        folder = self.parts_path(asset, partition, rejected)
        return [join(folder, p["name"]) for p in manifest["parts"]] if manifest else []

    def exists(self, asset: str, partition: str) -> bool:
        return self.location(asset, partition) is not None

    def require(self, asset: str, partition: str) -> str:
        found = self.location(asset, partition)
        if found is None:
            raise FileNotFoundError(
                f"no output of '{asset}' for partition '{partition}' under {self.root}: materialize it first"
            )
        return found

    def partitions(self, asset: str) -> list[str]:
        found = listing(self.fs, join(self.base, asset))
        return [i.base_name for i in found if exists(self.fs, join(i.path, MANIFEST))]

    def row_count(self, asset: str, partition: str, rejected: bool = False) -> int:
        manifest = self.manifest(asset, partition, rejected)
        return int(manifest["rows"]) if manifest else 0

    def schema(self, asset: str, partition: str) -> pa.Schema:
        self.require(asset, partition)
        return pq.read_schema(self.files(asset, partition)[0], filesystem=self.fs)

    def provenance(self, asset: str, partition: str) -> dict:
        raw = (self.schema(asset, partition).metadata or {}).get(PROVENANCE_KEY)
        return json.loads(raw) if raw else {}

    def iter_batches(
        self,
        asset: str,
        partition: str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        columns: list[str] | None = None,
        rejected: bool = False,
    ) -> Iterator[pd.DataFrame]:
        if not rejected:
            self.require(asset, partition)
        for path in self.files(asset, partition, rejected):
            with self.fs.open_input_file(path) as handle:
                for batch in pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns):
                    yield batch.to_pandas()

    def read(self, asset: str, partition: str, rejected: bool = False, columns: list[str] | None = None):
        files = self.files(asset, partition, rejected)
        if not rejected:
            self.require(asset, partition)
        if not files:
            return pd.DataFrame(columns=columns or [])
        tables = [pq.read_table(f, columns=columns, filesystem=self.fs) for f in files]
        return pa.concat_tables(tables).to_pandas()

    def stats_path(self, asset: str, partition: str) -> str:
        return join(self.base, STATS_DIR, asset, f"{check_source_name(partition)}.json")

    def write_stats(self, asset: str, partition: str, stats: dict) -> str:
        path = self.stats_path(asset, partition)
        with self.fs.open_output_stream(path) as out:
            out.write(json.dumps(stats, sort_keys=True, indent=1, default=str).encode())
        return path

    def read_stats(self, asset: str) -> dict[str, dict]:
        found = listing(self.fs, join(self.base, STATS_DIR, asset))
        out = {}
        for info in found:
            if info.base_name.endswith(".json"):
                with self.fs.open_input_stream(info.path) as handle:
                    out[info.base_name.removesuffix(".json")] = json.loads(handle.read())
        return out

    def uri(self, path: str) -> str:
        return uri(self.fs, path)

    def path(self, asset: str, partition: str) -> str:
        """A single local file per partition is the local layout's; here a stage that writes one
        through a path of its own (the CLIP embeddings, a Ray pool's staging) is refused, naming the
        root. ``document_embeddings`` writes its parts through :class:`ObjectTableWriter`."""
        raise NotImplementedError(
            f"{asset}[{partition}] writes a single file through a local path: it needs a local storage "
            f"root, not {self.root} (docs/running.md lists what works on an object store)"
        )

    rejected_path = path

    def writer(
        self,
        asset: str,
        partition: str,
        schema: pa.Schema,
        rejected_schema: pa.Schema,
        provenance: dict | None = None,
    ) -> ObjectPartitionWriter:
        return ObjectPartitionWriter(self, asset, partition, schema, rejected_schema, provenance or {})

    # -- unpartitioned assets: one object each, <root>/<asset>/<name or asset>.parquet -------------
    def table_path(self, asset: str, name: str | None = None) -> str:
        return join(self.base, asset, f"{check_source_name(name or asset)}.parquet")

    def require_table(self, asset: str, name: str | None = None) -> str:
        path = self.table_path(asset, name)
        if not exists(self.fs, path):
            raise FileNotFoundError(f"no output of '{asset}' at {self.uri(path)}: materialize {asset} first")
        return path

    def write_table(self, asset: str, table: pa.Table, provenance: dict, name: str | None = None) -> str:
        """One object, uploaded whole (it appears complete or not at all), stamped with what made it."""
        path = self.table_path(asset, name)
        schema = stamped(table.schema, provenance)
        pq.write_table(
            table.replace_schema_metadata(schema.metadata), path, filesystem=self.fs, compression="zstd"
        )
        return path

    def read_table(self, asset: str, name: str | None = None, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.require_table(asset, name), columns=columns, filesystem=self.fs)

    def table_provenance(self, asset: str, name: str | None = None) -> dict:
        raw = (pq.read_schema(self.require_table(asset, name), filesystem=self.fs).metadata or {}).get(
            PROVENANCE_KEY
        )
        return json.loads(raw) if raw else {}


class _RollingParts:
    """One folder's parts of one run, streamed: a part closes past ``part_bytes`` and the next opens.
    An object appears when its upload completes; none is read before the manifest lists it."""

    def __init__(self, filesystem, folder: str, schema: pa.Schema, run: str, part_bytes: int):
        self.fs, self.folder, self.schema, self.run = filesystem, folder, schema, run
        self.part_bytes = part_bytes
        self.names: list[str] = []
        self.rows = 0
        self._stream = self._writer = None

    def _open(self) -> None:
        name = f"part-{len(self.names):05d}-{self.run}.parquet"
        self._stream = self.fs.open_output_stream(join(self.folder, name))
        self._writer = pq.ParquetWriter(self._stream, self.schema, compression="zstd")
        self.names.append(name)

    def _close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._stream.close()
            self._stream = self._writer = None

    def write(self, table: pa.Table) -> None:
        if not table.num_rows:
            return
        if self._writer is None:
            self._open()
        self._writer.write_table(table)
        self.rows += table.num_rows
        if self._stream.tell() >= self.part_bytes:
            self._close()

    def finish(self) -> list[str]:
        """Close the last part; an output with no rows still gets one (empty) part: its schema."""
        if not self.names:
            self._open()
        self._close()
        return self.names

    def discard(self) -> None:
        with contextlib.suppress(Exception):
            self._close()
        for name in self.names:
            with contextlib.suppress(FileNotFoundError, OSError):
                self.fs.delete_file(join(self.folder, name))


def delete_unlisted_parts(fs: pafs.FileSystem, folder: str, names: list[str]) -> None:
    """Delete every part of ``folder`` that its just-written manifest (``names``) does not list:
    older runs' parts, and those of runs that died. Called after the commit, so no reader of the
    new manifest needs them; one already gone is fine."""
    for info in listing(fs, folder):
        if info.base_name.startswith("part-") and info.base_name not in names:
            with contextlib.suppress(FileNotFoundError, OSError):
                fs.delete_file(info.path)


class ObjectPartitionWriter(RowsAndRejections):
    """A stage's kept and rejected rows of one partition, streamed from one process to an object
    store: both manifests are written at commit (the quarantine's first, then the output's, the
    commit point), so both land, or neither does. The same interface as
    :class:`refinery.storage.PartitionWriter`."""

    def __init__(
        self,
        store: ObjectStorage,
        asset: str,
        partition: str,
        schema: pa.Schema,
        rejected_schema: pa.Schema,
        provenance: dict,
        part_bytes: int = PART_BYTES,
    ):
        self.store, self.asset, self.partition = store, asset, check_source_name(partition)
        self.provenance = provenance
        self.schema = stamped(schema.remove_metadata(), provenance)
        self.rejected_schema = stamped(rejected_schema.remove_metadata(), provenance)
        self.run = temp_path(Path("x")).name.split(".")[2]  # host-pid-random: names this run's parts
        self._out = _RollingParts(
            store.fs, store.parts_path(asset, partition), self.schema, self.run, part_bytes
        )
        self._rejected = _RollingParts(
            store.fs, store.parts_path(asset, partition, True), self.rejected_schema, self.run, part_bytes
        )

    @property
    def path(self) -> str:
        """The output's folder as a URI (``s3://bucket/…``): what the metadata shows."""
        return self.store.uri(self._out.folder)

    @property
    def rejected_path(self) -> str:
        return self.store.uri(self._rejected.folder)

    def commit(self) -> None:
        parts = [(p, p.finish()) for p in (self._rejected, self._out)]
        for p, names in parts:  # the quarantine first: who finds the output finds its rejections
            write_manifest_at(self.store.fs, p.folder, names, self.provenance)
        for p, names in parts:
            delete_unlisted_parts(self.store.fs, p.folder, names)

    def abort(self) -> None:
        self._rejected.discard()
        self._out.discard()


class ObjectTableWriter:
    """One partition's table with no quarantine (a side table such as ``document_embeddings``),
    streamed from one process to an object store: parts of this run, then the manifest (the commit
    point), then the parts of older runs deleted. :mod:`refinery.partition_tables` picks it or the
    local file's writer for a storage root."""

    def __init__(
        self,
        store: ObjectStorage,
        asset: str,
        partition: str,
        schema: pa.Schema,
        provenance: dict,
        part_bytes: int = PART_BYTES,
    ):
        self.store, self.provenance = store, provenance
        run = temp_path(Path("x")).name.split(".")[2]  # host-pid-random: names this run's parts
        self._parts = _RollingParts(store.fs, store.parts_path(asset, partition), schema, run, part_bytes)

    @property
    def path(self) -> str:
        """The partition's folder as a URI (``s3://bucket/…``): what the metadata shows."""
        return self.store.uri(self._parts.folder)

    def write(self, table: pa.Table) -> None:
        self._parts.write(table)

    def commit(self) -> dict:
        """The manifest of this run's parts, written last; returns it."""
        names = self._parts.finish()
        manifest = write_manifest_at(self.store.fs, self._parts.folder, names, self.provenance)
        delete_unlisted_parts(self.store.fs, self._parts.folder, names)
        return manifest

    def abort(self) -> None:
        self._parts.discard()
