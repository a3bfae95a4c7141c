"""DuckDB views over a storage root on any :mod:`pyarrow.fs` filesystem (an object store).

DuckDB reads ``s3://`` itself only with its ``httpfs`` extension, which it downloads at run time
(no wheel on PyPI ships it), and it would read every object under a prefix, the parts of a run in
progress or of one that died included. So on such a root each view is a :mod:`pyarrow.dataset`
over exactly the parts the partitions' manifests list (the committed rows), opened through the
root's filesystem (its endpoint, region and credentials), and registered on the connection: DuckDB
scans it with column projection and filter pushdown, streaming. The names are those of the local
views (:mod:`refinery.sql`): one per asset, one ``rejected_<asset>`` per quarantine, unpartitioned
tables (``<asset>/<name>.parquet``) included. Registered views live in their connection: a DuckDB
catalog file cannot hold them.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import join, listing
from refinery.manifest import read_manifest_at
from refinery.storage import REJECTED_DIR, STATS_DIR

SKIPPED = {STATS_DIR, "_work", "_staging"}  # scratch and statistics, not assets


def asset_files(filesystem: pafs.FileSystem, folder: str) -> list[str]:
    """The committed files of one asset folder, partitions in name order: each partition's manifest
    parts, and the asset's one-object tables (``<folder>/<name>.parquet``)."""
    files = []
    for info in listing(filesystem, folder):
        if info.type == pafs.FileType.Directory:
            manifest = read_manifest_at(filesystem, info.path)
            if manifest:
                files += [join(info.path, p["name"]) for p in manifest["parts"]]
        elif info.base_name.endswith(".parquet") and not info.base_name.startswith("."):
            files.append(info.path)
    return files


def dataset_of(filesystem: pafs.FileSystem, files: list[str]) -> ds.Dataset:
    """The files as one dataset, columns unioned by name (as DuckDB's ``union_by_name``): one footer
    read per partition folder, since a partition's parts share their schema."""
    seen, schemas = set(), []
    for f in files:
        folder, name = f.rsplit("/", 1)
        key = folder if name.startswith("part-") else f  # a partition's parts, or a one-object table
        if key not in seen:
            seen.add(key)
            schemas.append(pq.read_schema(f, filesystem=filesystem).remove_metadata())
    return ds.dataset(files, schema=pa.unify_schemas(schemas), filesystem=filesystem, format="parquet")


def storage_views(filesystem: pafs.FileSystem, base: str) -> dict[str, list[str]]:
    """view name -> committed files, for every asset and quarantine under ``base``."""
    views: dict[str, list[str]] = {}
    for info in listing(filesystem, base):
        if info.type != pafs.FileType.Directory or info.base_name in SKIPPED:
            continue
        if info.base_name == REJECTED_DIR:
            for sub in listing(filesystem, info.path):
                if sub.type == pafs.FileType.Directory and (files := asset_files(filesystem, sub.path)):
                    views[f"rejected_{sub.base_name}"] = files
        elif files := asset_files(filesystem, info.path):
            views[info.base_name] = files
    return views


def register_storage_views(con: Any, filesystem: pafs.FileSystem, base: str) -> list[str]:
    """Register a view per asset and quarantine under ``base`` on the DuckDB connection ``con``."""
    names = []
    for name, files in storage_views(filesystem, base).items():
        con.register(name, dataset_of(filesystem, files))
        names.append(name)
    return names


def register_vector_views(con: Any, filesystem: pafs.FileSystem, base: str) -> list[str]:
    """``vectors_<collection>`` (source, id, embedding) on an object store, as the local views have
    them: one dataset over the committed parts of every partition of the collection's asset, its
    ``source`` column the partition folder's name, the vector cast to DuckDB's fixed-size ARRAY (so
    ``array_inner_product`` applies) when every partition has one dimension."""
    from refinery.vector_collections import COLLECTIONS

    names = []
    for which in COLLECTIONS.values():
        folder = join(base, which.asset)
        files = [f for f in asset_files(filesystem, folder) if f.rsplit("/", 1)[1].startswith("part-")]
        if not files:
            continue
        partitioning = ds.DirectoryPartitioning(pa.schema([("source", pa.string())]))
        dataset = ds.dataset(
            files,
            filesystem=filesystem,
            format="parquet",
            partitioning=partitioning,
            partition_base_dir=folder,
        )
        dims = {
            pq.read_schema(f, filesystem=filesystem).field(which.column).type.list_size
            for f in {f.rsplit("/", 1)[0]: f for f in files}.values()  # one footer per partition
        }
        cast = f"::FLOAT[{dims.pop()}]" if len(dims) == 1 else ""
        hidden = f"_vectors_{which.name}_parts"
        con.register(hidden, dataset)
        con.execute(
            f'CREATE OR REPLACE VIEW "vectors_{which.name}" AS '
            f'SELECT source, id, "{which.column}"{cast} AS embedding FROM "{hidden}"'
        )
        names.append(f"vectors_{which.name}")
    return names
