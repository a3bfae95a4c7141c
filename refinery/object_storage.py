"""Asset partitions on an object store (``s3://bucket/prefix``…), through :mod:`pyarrow.fs`.

An object store has no atomic rename, so the local layout's commit (a staging folder moved into
place) does not carry over. Here a partition is ``<root>/<asset>/<partition>/`` (its quarantine
``<root>/rejected/<asset>/<partition>/``) holding parts named after the run that wrote them
(``part-00000-<run>.parquet``) and ``_manifest.json``, which lists them and is written last: the
manifest is the commit point. Readers read only the parts the current manifest lists, so a run in
progress or one that died is never seen, and the parts of older runs are deleted once a newer
manifest replaces theirs.

What works on such a root today: ingest on a distributed engine (one task per file or range,
:mod:`refinery.kernel.ingest_tasks`, which writes this layout) and the readers below (rows, batches,
counts, schema, provenance, partitions, stats). Stages that write one file from one process
(:class:`refinery.storage.PartitionWriter`), DuckDB views and the loader need a local root (or a
mounted bucket): see docs/running.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.fs import exists, is_local, join, listing, split_root
from refinery.manifest import MANIFEST, read_manifest_at
from refinery.paths import check_source_name
from refinery.storage import DEFAULT_BATCH_ROWS, PROVENANCE_KEY, REJECTED_DIR, STATS_DIR, Storage


def open_storage(root: str) -> Storage | ObjectStorage:
    """The storage of a root: a local folder or ``file://`` URI (:class:`Storage`, every stage), or an
    object store URI (:class:`ObjectStorage`: ingest's parts and the readers)."""
    return Storage(root) if is_local(root) else ObjectStorage(root)


class ObjectStorage:
    """Readers of asset partitions under a storage root URI (the manifest's parts only)."""

    def __init__(self, root: str):
        self.root = root
        self.fs, self.base = split_root(root)

    def parts_path(self, asset: str, partition: str, rejected: bool = False) -> str:
        folder = join(self.base, REJECTED_DIR, asset) if rejected else join(self.base, asset)
        return join(folder, check_source_name(partition))

    def manifest(self, asset: str, partition: str, rejected: bool = False) -> dict | None:
        return read_manifest_at(self.fs, self.parts_path(asset, partition, rejected))

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

    def writer(self, asset: str, partition: str, *args, **kwargs):
        raise NotImplementedError(
            f"{asset}[{partition}]: a stage that writes one file from one process needs a local storage "
            f"root, not {self.root}; on an object store only ingest on a distributed engine writes so far"
        )
