"""Parquet at rest: one file per asset partition, written atomically, read in batches.

Every stage streams: it reads its input in record batches and appends to its outputs, so memory
stays flat however large a partition grows. A reader never sees a half-written file: output and
rejected rows go to temporary files beside their targets and are renamed into place only when
the stage finishes without error.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import local_path
from refinery.manifest import build_manifest, read_manifest, write_manifest
from refinery.part_files import PART_NAME, PART_PATTERN, parquet_files, part_order
from refinery.paths import check_source_name
from refinery.tempfiles import clean_stray, fsync_dir, fsync_file, fsync_tree, publish_file, temp_path

REJECTED_DIR = "rejected"
STATS_DIR = "_stats"
DEFAULT_BATCH_ROWS = 5_000
PROVENANCE_KEY = b"refinery"


def table_from_frame(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """Convert a batch to the stage's declared schema, so every file of an asset agrees."""
    missing = [name for name in schema.names if name not in frame.columns]
    if missing:
        raise KeyError(f"batch lacks columns {missing} required by the output schema")
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def count_rows(path: Path | None) -> int:
    return sum(pq.ParquetFile(f).metadata.num_rows for f in parquet_files(path))


def iter_path_batches(
    path: Path, batch_rows: int = DEFAULT_BATCH_ROWS, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Every row of a partition's output (either layout) in order, as Arrow record batches."""
    for file in parquet_files(path):
        yield from pq.ParquetFile(file).iter_batches(batch_size=batch_rows, columns=columns)


def read_path(path: Path, columns: list[str] | None = None) -> pa.Table:
    files = parquet_files(path)
    if len(files) == 1:
        return pq.read_table(files[0], columns=columns)
    return pa.concat_tables([pq.read_table(f, columns=columns) for f in files])


class Storage:
    """Paths and readers for one asset partition's output and its rejected twin.

    A partition is either one file, ``<root>/<asset>/<partition>.parquet`` (what a stage running
    in one process writes), or a folder of part files, ``<root>/<asset>/<partition>/part-NNNNN.parquet``
    (what a stage split over many workers writes, one part per slice of its input, in input
    order). Every reader here accepts both and returns rows in the same order; a partition never
    has both at once (each writer removes the other layout when it commits).
    """

    def __init__(self, root: str | os.PathLike):
        # A folder or a file:// URI; an object store root (s3://…) is refinery.object_storage's.
        self.root = local_path(root)
        # What readers that serve every root (checks, views, loaders) open files with: refinery.fs's.
        self.fs = pafs.LocalFileSystem()

    def path(self, asset: str, partition: str) -> Path:
        """The single-file location (which may not exist; see :meth:`location`)."""
        return self.root / asset / f"{check_source_name(partition)}.parquet"

    def rejected_path(self, asset: str, partition: str) -> Path:
        return self.root / REJECTED_DIR / asset / f"{check_source_name(partition)}.parquet"

    def parts_path(self, asset: str, partition: str, rejected: bool = False) -> Path:
        """The part-files location of a partition written by many workers."""
        base = self.root / REJECTED_DIR / asset if rejected else self.root / asset
        return base / check_source_name(partition)

    def location(self, asset: str, partition: str, rejected: bool = False) -> Path | None:
        """Where the partition's output is: its file, its parts folder, or None."""
        single = self.rejected_path(asset, partition) if rejected else self.path(asset, partition)
        if single.is_file():
            return single
        parts = self.parts_path(asset, partition, rejected)
        return parts if parquet_files(parts) else None

    def files(self, asset: str, partition: str, rejected: bool = False) -> list[Path]:
        return parquet_files(self.location(asset, partition, rejected))

    def exists(self, asset: str, partition: str) -> bool:
        return self.location(asset, partition) is not None

    def version(self, asset: str, partition: str) -> str:
        """The committed output's data version, as Dagster is given it: its manifest's hash (parts
        written by workers), else the same hash computed from a single file's footer (name, rows,
        bytes) and the provenance stamped in it. No clocks or run ids: the same rows written again by
        the same code and parameters give the same version, so nothing downstream looks changed."""
        location = self.require(asset, partition)
        manifest = read_manifest(location) if location.is_dir() else None
        if manifest and manifest.get("version"):
            return str(manifest["version"])
        return str(build_manifest(location, read_provenance(parquet_files(location)[0]))["version"])

    def require(self, asset: str, partition: str) -> Path:
        """The output's location (a file, or a folder of parts that pyarrow and DuckDB read as one)."""
        found = self.location(asset, partition)
        if found is None:
            raise FileNotFoundError(
                f"no output of '{asset}' for partition '{partition}' at {self.path(asset, partition)}: "
                "materialize it first"
            )
        return found

    def partitions(self, asset: str) -> list[str]:
        folder = self.root / asset
        if not folder.is_dir():
            return []
        names = {p.stem for p in folder.glob("*.parquet")}
        names |= {p.name for p in folder.iterdir() if p.is_dir() and any(p.glob(PART_PATTERN))}
        # Hidden: the staging folders of a run in progress, or of a failed attempt kept for its retry.
        return sorted(n for n in names if not n.startswith("."))

    def row_count(self, asset: str, partition: str, rejected: bool = False) -> int:
        return count_rows(self.location(asset, partition, rejected))

    def schema(self, asset: str, partition: str) -> pa.Schema:
        return pq.read_schema(parquet_files(self.require(asset, partition))[0])

    def provenance(self, asset: str, partition: str) -> dict:
        return read_provenance(parquet_files(self.require(asset, partition))[0])

    def iter_batches(
        self,
        asset: str,
        partition: str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        columns: list[str] | None = None,
    ) -> Iterator[pd.DataFrame]:
        for batch in iter_path_batches(self.require(asset, partition), batch_rows, columns):
            yield batch.to_pandas()

    def read(self, asset: str, partition: str, rejected: bool = False, columns: list[str] | None = None):
        path = self.location(asset, partition, rejected) if rejected else self.require(asset, partition)
        if path is None:
            return pd.DataFrame(columns=columns or [])
        return read_path(path, columns).to_pandas()

    # -- unpartitioned assets: one table each, at <root>/<asset>/<name or asset>.parquet ---------
    def table_path(self, asset: str, name: str | None = None) -> Path:
        """Where an unpartitioned asset keeps a table (so ``refinery sql`` shows it as a view
        named after the asset)."""
        return self.path(asset, name or asset)

    def require_table(self, asset: str, name: str | None = None) -> Path:
        path = self.table_path(asset, name)
        if not path.exists():
            raise FileNotFoundError(f"no output of '{asset}' at {path}: materialize {asset} first")
        return path

    def write_table(self, asset: str, table: pa.Table, provenance: dict, name: str | None = None) -> Path:
        """Write one table atomically (temporary file, then rename), stamped with what made it."""
        target = _AtomicParquet(self.table_path(asset, name), stamped(table.schema, provenance))
        try:
            target.write(table.replace_schema_metadata(target.schema.metadata))
        except BaseException:
            target.abort()
            raise
        target.commit()
        return target.target

    def table_provenance(self, asset: str, name: str | None = None) -> dict:
        return read_provenance(self.require_table(asset, name))

    def stats_path(self, asset: str, partition: str) -> Path:
        return self.root / STATS_DIR / asset / f"{check_source_name(partition)}.json"

    def write_stats(self, asset: str, partition: str, stats: dict) -> Path:
        """A small JSON of counts beside the data, so reports need not rescan every file."""
        path = self.stats_path(asset, partition)
        path.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(path)
        temp.write_text(json.dumps(stats, sort_keys=True, indent=1, default=str))
        publish_file(temp, path)
        return path

    def read_stats(self, asset: str) -> dict[str, dict]:
        """partition -> stats, for every partition of the asset that has them."""
        folder = self.root / STATS_DIR / asset
        if not folder.is_dir():
            return {}
        return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}

    def writer(
        self,
        asset: str,
        partition: str,
        schema: pa.Schema,
        rejected_schema: pa.Schema,
        provenance: dict | None = None,
    ) -> PartitionWriter:
        return PartitionWriter(
            self.path(asset, partition),
            self.rejected_path(asset, partition),
            schema,
            rejected_schema,
            provenance or {},
        )


def read_provenance(path: Path) -> dict:
    """What made a Parquet file (its ``refinery`` schema metadata), or ``{}``."""
    raw = (pq.read_schema(path).metadata or {}).get(PROVENANCE_KEY)
    return json.loads(raw) if raw else {}


def stamped(schema: pa.Schema, provenance: dict) -> pa.Schema:
    """The schema carrying the provenance stamp: what made the file, and nothing run-specific."""
    stamp = {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, default=str).encode()}
    return schema.with_metadata({**(schema.metadata or {}), **stamp})


def replace_partition(new: Path, target: Path, other: Path) -> None:
    """Put ``new`` (a file or a parts folder) at ``target`` and remove ``other``, the partition's
    output in the other layout. A file replaces a file atomically; otherwise the old output is
    first moved aside, so a reader sees the old output, then nothing, then the new one: never a
    mix of parts, never both layouts."""
    trash = []
    aside_first = [other]
    if target.exists() and (target.is_dir() or new.is_dir()):
        aside_first.append(target)
    for old in aside_first:
        if old.exists():
            aside = temp_path(old, "old")
            os.replace(old, aside)
            trash.append(aside)
    os.replace(new, target)
    fsync_dir(target.parent)
    for aside in trash:
        if aside.is_dir():
            shutil.rmtree(aside, ignore_errors=True)
        else:
            aside.unlink(missing_ok=True)


class _AtomicParquet:
    """One Parquet file written under a temporary name and renamed into place on commit."""

    def __init__(self, target: Path, schema: pa.Schema):
        self.target = target
        self.schema = schema
        self.rows = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        clean_stray(target.parent)  # temporaries of killed writers of this folder
        self.temp = temp_path(target)
        self._writer = pq.ParquetWriter(self.temp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self) -> None:
        self._writer.close()
        fsync_file(self.temp)  # durable before it becomes visible
        replace_partition(self.temp, self.target, self.target.with_suffix(""))

    def abort(self) -> None:
        self._writer.close()
        self.temp.unlink(missing_ok=True)


class RowsAndRejections:
    """What every partition writer shares: the kept rows go to ``_out`` and the rejected to
    ``_rejected`` (each with a ``write(table)`` and ``rows``), cast to the stage's schemas."""

    schema: pa.Schema
    rejected_schema: pa.Schema
    _out: Any
    _rejected: Any

    @property
    def rows_out(self) -> int:
        return self._out.rows

    @property
    def rows_rejected(self) -> int:
        return self._rejected.rows

    def write(self, kept: pd.DataFrame | None = None, rejected: pd.DataFrame | None = None) -> None:
        if kept is not None and len(kept):
            self._out.write(table_from_frame(kept, self.schema))
        if rejected is not None and len(rejected):
            self._rejected.write(table_from_frame(rejected, self.rejected_schema))

    def write_table(self, kept: pa.Table) -> None:
        """Kept rows already in Arrow with the stage's columns (ingest's blocks), in the
        output's schema."""
        if kept.num_rows:
            self._out.write(pa.Table.from_arrays(kept.columns, schema=self.schema))

    def commit(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit when the block ends normally, abort when it raises: both outputs land, or neither."""
        if exc_type is None:
            self.commit()
        else:
            self.abort()


class PartitionWriter(RowsAndRejections):
    """Writes a stage's kept rows and rejected rows together; both land, or neither does."""

    def __init__(
        self,
        path: Path,
        rejected_path: Path,
        schema: pa.Schema,
        rejected_schema: pa.Schema,
        provenance: dict,
    ):
        self.schema = stamped(schema.remove_metadata(), provenance)
        self.rejected_schema = stamped(rejected_schema.remove_metadata(), provenance)
        self._out = _AtomicParquet(path, self.schema)
        self._rejected = _AtomicParquet(rejected_path, self.rejected_schema)

    @property
    def path(self) -> Path:
        return self._out.target

    @property
    def rejected_path(self) -> Path:
        return self._rejected.target

    def commit(self) -> None:
        # Rejected first: a reader that finds the new output also finds its rejections.
        self._rejected.commit()
        self._out.commit()

    def abort(self) -> None:
        self._rejected.abort()
        self._out.abort()


class PartsWriter:
    """A partition written as parts by many workers, committed as a whole by one process.

    Each worker writes the kept and rejected rows of its slice ``i`` as ``part-{i:05d}.parquet``
    into the staging folders named by ``token`` (temporary file, then rename, so a retried slice
    simply rewrites its part). :meth:`commit` checks that every slice's two parts are there and
    seals each folder with its manifest (``_manifest.json``: the parts, their rows and bytes, and the
    provenance stamped in them; its hash is the output's data version) and moves the folders into
    place (rejected first, as for single files); :meth:`abort` removes them. The output is then
    complete or absent, never partial.
    """

    def __init__(self, storage: Storage, asset: str, partition: str, token: str | None = None):
        self.storage, self.asset, self.partition = storage, asset, partition
        # Names the committing process (host-pid-random), so a killed driver's staging is swept.
        self.token = token or temp_path(Path("x")).name.split(".")[2]
        if token is None:
            for rejected in (False, True):
                clean_stray(self.storage.parts_path(asset, partition, rejected).parent)

    def staging(self, rejected: bool = False) -> Path:
        final = self.storage.parts_path(self.asset, self.partition, rejected)
        return final.with_name(f".{final.name}.parts.{self.token}.tmp")

    @staticmethod
    def part_name(index: int) -> str:
        return f"part-{index:05d}.parquet"

    def write_part(self, index: int, table: pa.Table, rejected: bool = False) -> Path:
        folder = self.staging(rejected)
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / self.part_name(index)
        temp = temp_path(target)
        pq.write_table(table, temp, compression="zstd")
        publish_file(temp, target)  # a retried slice rewrites the same name
        return target

    def commit(self, parts: int) -> tuple[Path, Path]:
        for rejected in (False, True):
            names = sorted((p.name for p in self.staging(rejected).glob(PART_PATTERN)), key=part_order)
            expected = [self.part_name(i) for i in range(parts)]
            if names != expected:
                raise RuntimeError(
                    f"{self.asset}[{self.partition}]: {len(names)} of {parts} "
                    f"{'rejected ' if rejected else ''}parts were written; nothing committed"
                )
        for rejected in (False, True):  # leftovers of workers that died mid-part (their slice was redone)
            for entry in self.staging(rejected).iterdir():
                if not PART_NAME.match(entry.name):
                    entry.unlink(missing_ok=True)
            # Last into the folder: its parts, rows and provenance; its hash is the data version.
            first = self.staging(rejected) / self.part_name(0)
            write_manifest(self.staging(rejected), read_provenance(first) if parts else {})
        located = []
        for rejected in (True, False):
            final = self.storage.parts_path(self.asset, self.partition, rejected)
            single = (
                self.storage.rejected_path(self.asset, self.partition)
                if rejected
                else self.storage.path(self.asset, self.partition)
            )
            fsync_tree(self.staging(rejected))
            replace_partition(self.staging(rejected), final, single)
            located.append(final)
        return located[1], located[0]

    def abort(self) -> None:
        for rejected in (False, True):
            shutil.rmtree(self.staging(rejected), ignore_errors=True)


def parquet_view(con: Any, name: str, files: list[str], columns: dict[str, str]) -> None:
    """A temporary view ``name`` of ``columns`` over the Parquet ``files`` (columns unioned by name), or
    an empty table of those columns when there are none: the packers read a manifest's partitions so.
    ``con`` is a DuckDB connection (imported by the caller, on use)."""
    if files:
        listing = ", ".join("'" + f.replace("'", "''") + "'" for f in files)
        con.execute(
            f"CREATE TEMP VIEW {name} AS SELECT {', '.join(columns)} "
            f"FROM read_parquet([{listing}], union_by_name = true)"
        )
    else:
        typed = ", ".join(f"{column} {kind}" for column, kind in columns.items())
        con.execute(f"CREATE TEMP TABLE {name} ({typed})")
