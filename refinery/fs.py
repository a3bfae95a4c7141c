"""Storage roots as URIs: a local folder (the default), ``file:///…``, or an object store through
:mod:`pyarrow.fs` (``s3://bucket/prefix``, ``gs://…``, ``abfs://…``).

Options of the filesystem go in the URI's query, as pyarrow reads them, e.g.
``s3://bucket/refinery?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1``
(an S3-compatible server such as MinIO); credentials come from the usual environment variables
(``AWS_ACCESS_KEY_ID``…) or the query (``access_key``/``secret_key``). A plain path or a ``file://``
URI stays a local :class:`pathlib.Path`, so everything that reads local files works unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq


def is_local(root: str | os.PathLike) -> bool:
    """A plain path or a ``file://`` URI."""
    text = os.fspath(root)
    return "://" not in text or text.startswith("file://")


def local_path(root: str | os.PathLike) -> Path:
    """The local folder of a plain path or a ``file://`` URI."""
    text = os.fspath(root)
    if text.startswith("file://"):
        parsed = urlparse(text)
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"storage root {text!r}: a file:// URI names a local path (file:///abs/path)")
        return Path(unquote(parsed.path))
    if "://" in text:
        raise ValueError(f"storage root {text!r} is not local")
    return Path(text)


def split_root(root: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(the filesystem, the root's path on it) of a storage root; local roots on LocalFileSystem."""
    if is_local(root):
        return pafs.LocalFileSystem(), str(local_path(root).expanduser().resolve())
    filesystem, path = pafs.FileSystem.from_uri(os.fspath(root))
    return filesystem, path.rstrip("/")


def join(*parts: str) -> str:
    """A path on a pyarrow filesystem (always '/'-separated)."""
    return "/".join(p.strip("/") if i else p.rstrip("/") for i, p in enumerate(parts) if p)


def exists(filesystem: pafs.FileSystem, path: str) -> bool:
    return filesystem.get_file_info(path).type != pafs.FileType.NotFound


def listing(filesystem: pafs.FileSystem, folder: str, recursive: bool = False) -> list[pafs.FileInfo]:
    """The entries under ``folder`` (none when it does not exist), sorted by path."""
    selector = pafs.FileSelector(folder, allow_not_found=True, recursive=recursive)
    return sorted(filesystem.get_file_info(selector), key=lambda info: info.path)


# -- Parquet files on any filesystem: what readers, checks and views share ---------------------------
def read_parquet_files(
    filesystem: pafs.FileSystem, files: list, columns: list[str] | None = None
) -> pa.Table:
    """The rows of ``files`` (paths on ``filesystem``, in order) as one table; an empty table of
    ``columns`` (typed null) when there are none."""
    tables = [pq.read_table(str(f), columns=columns, filesystem=filesystem) for f in files]
    if not tables:
        return pa.table({c: pa.array([], pa.null()) for c in columns or []})
    return tables[0] if len(tables) == 1 else pa.concat_tables(tables)


def iter_parquet_batches(
    filesystem: pafs.FileSystem, files: list, batch_rows: int, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """Every row of ``files`` in order, as record batches, one file open at a time."""
    for f in files:
        with filesystem.open_input_file(str(f)) as handle:
            yield from pq.ParquetFile(handle).iter_batches(batch_size=batch_rows, columns=columns)


def parquet_rows(filesystem: pafs.FileSystem, files: list) -> int:
    """Rows of ``files``, from their footers."""
    total = 0
    for f in files:
        with filesystem.open_input_file(str(f)) as handle:
            total += pq.ParquetFile(handle).metadata.num_rows
    return total


def uri(filesystem: pafs.FileSystem, path: str) -> str:
    """A path on ``filesystem`` as a person (or another tool) names it: ``s3://bucket/key``, or the
    local path."""
    kind = filesystem.type_name
    return str(path) if kind == "local" else f"{kind}://{path}"


def child(root: str | os.PathLike, *parts: str) -> str:
    """A path under a storage root, as a root of its own: ``s3://b/p?opts`` → ``s3://b/p/a/b?opts`` (the
    filesystem's options kept), a local folder → the local folder below it."""
    text = os.fspath(root)
    if is_local(text):
        return str(local_path(text).joinpath(*parts))
    head, _, query = text.partition("?")
    return join(head, *parts) + (f"?{query}" if query else "")


def file_sizes(filesystem: pafs.FileSystem, paths: list[str]) -> list[int | None]:
    """Each file's size, None where it is missing (one listing call for them all): what a done
    marker checks its files against."""
    if not paths:
        return []
    infos = filesystem.get_file_info(list(paths))
    return [i.size if i.type == pafs.FileType.File else None for i in infos]
