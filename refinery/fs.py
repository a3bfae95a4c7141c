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
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow.fs as pafs


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
