"""Parquet at rest: one file per asset partition, written atomically, read in batches.

Every stage streams: it reads its input in record batches and appends to its outputs, so memory
stays flat however large a partition grows. A reader never sees a half-written file: output and
rejected rows go to temporary files beside their targets and are renamed into place only when
the stage finishes without error.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.paths import check_source_name

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


class Storage:
    """Paths and readers for ``<root>/<asset>/<partition>.parquet`` and its rejected twin."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def path(self, asset: str, partition: str) -> Path:
        return self.root / asset / f"{check_source_name(partition)}.parquet"

    def rejected_path(self, asset: str, partition: str) -> Path:
        return self.root / REJECTED_DIR / asset / f"{check_source_name(partition)}.parquet"

    def exists(self, asset: str, partition: str) -> bool:
        return self.path(asset, partition).exists()

    def require(self, asset: str, partition: str) -> Path:
        path = self.path(asset, partition)
        if not path.exists():
            raise FileNotFoundError(
                f"no output of '{asset}' for partition '{partition}' at {path}: materialize it first"
            )
        return path

    def partitions(self, asset: str) -> list[str]:
        folder = self.root / asset
        if not folder.is_dir():
            return []
        return sorted(p.stem for p in folder.glob("*.parquet"))

    def row_count(self, asset: str, partition: str, rejected: bool = False) -> int:
        path = self.rejected_path(asset, partition) if rejected else self.path(asset, partition)
        return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0

    def schema(self, asset: str, partition: str) -> pa.Schema:
        return pq.read_schema(self.require(asset, partition))

    def provenance(self, asset: str, partition: str) -> dict:
        return read_provenance(self.require(asset, partition))

    def iter_batches(
        self,
        asset: str,
        partition: str,
        batch_rows: int = DEFAULT_BATCH_ROWS,
        columns: list[str] | None = None,
    ) -> Iterator[pd.DataFrame]:
        parquet = pq.ParquetFile(self.require(asset, partition))
        for batch in parquet.iter_batches(batch_size=batch_rows, columns=columns):
            yield batch.to_pandas()

    def read(self, asset: str, partition: str, rejected: bool = False, columns: list[str] | None = None):
        path = self.rejected_path(asset, partition) if rejected else self.require(asset, partition)
        if not path.exists():
            return pd.DataFrame(columns=columns or [])
        return pq.read_table(path, columns=columns).to_pandas()

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
        target = _AtomicParquet(self.table_path(asset, name), _stamped(table.schema, provenance))
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
        temp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        temp.write_text(json.dumps(stats, sort_keys=True, indent=1, default=str))
        os.replace(temp, path)
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


def _stamped(schema: pa.Schema, provenance: dict) -> pa.Schema:
    """The schema carrying the provenance stamp: what made the file, and nothing run-specific."""
    stamp = {PROVENANCE_KEY: json.dumps(provenance, sort_keys=True, default=str).encode()}
    return schema.with_metadata({**(schema.metadata or {}), **stamp})


class _AtomicParquet:
    """One Parquet file written under a temporary name and renamed into place on commit."""

    def __init__(self, target: Path, schema: pa.Schema):
        self.target = target
        self.schema = schema
        self.rows = 0
        target.parent.mkdir(parents=True, exist_ok=True)
        self.temp = target.with_name(f".{target.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
        self._writer = pq.ParquetWriter(self.temp, schema, compression="zstd")

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self._writer.write_table(table)
            self.rows += table.num_rows

    def commit(self) -> None:
        self._writer.close()
        os.replace(self.temp, self.target)

    def abort(self) -> None:
        self._writer.close()
        self.temp.unlink(missing_ok=True)


class PartitionWriter:
    """Writes a stage's kept rows and rejected rows together; both land, or neither does."""

    def __init__(
        self,
        path: Path,
        rejected_path: Path,
        schema: pa.Schema,
        rejected_schema: pa.Schema,
        provenance: dict,
    ):
        self.schema = _stamped(schema.remove_metadata(), provenance)
        self.rejected_schema = _stamped(rejected_schema.remove_metadata(), provenance)
        self._out = _AtomicParquet(path, self.schema)
        self._rejected = _AtomicParquet(rejected_path, self.rejected_schema)

    @property
    def path(self) -> Path:
        return self._out.target

    @property
    def rejected_path(self) -> Path:
        return self._rejected.target

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

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            # Rejected first: a reader that finds the new output also finds its rejections.
            self._rejected.commit()
            self._out.commit()
        else:
            self._rejected.abort()
            self._out.abort()
