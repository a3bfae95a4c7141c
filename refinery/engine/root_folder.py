"""A folder of a storage root, named so that it travels to a cluster's workers: a local path, or a
:mod:`pyarrow.fs` URI with its query (``s3://bucket/prefix/_staging/…?endpoint_override=…``).

The Ray engine's workers read their slices and write their parts, scratch files and done markers
on the storage root itself. A filesystem object need not pickle (and would carry the driver's
credentials), so what is sent is the folder's name: each process opens the filesystem from it once
(:func:`filesystem_of`; credentials from the URI's query or the worker's own environment).

Writes of whole files are atomic on both kinds: a local file is written under a temporary name
and renamed; an object appears when its upload completes.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import child, is_local, join, listing, local_path, split_root
from refinery.tempfiles import publish_file, temp_path

_FILESYSTEMS: dict[str, tuple[pafs.FileSystem, str]] = {}


def filesystem_of(location: str | os.PathLike) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) of a local path or a URI; one filesystem per URI and process (an
    S3 client is not free to make)."""
    text = os.fspath(location)
    if is_local(text):
        return pafs.LocalFileSystem(), str(local_path(text))
    head, _, query = text.partition("?")
    scheme, _, rest = head.partition("://")
    bucket = rest.split("/", 1)[0]  # with its credentials, if the URI carries them
    key = f"{scheme}://{bucket}?{query}"  # the filesystem depends on the bucket's options, not the path
    if key not in _FILESYSTEMS:
        _FILESYSTEMS[key] = split_root(text)
    filesystem, _ = _FILESYSTEMS[key]
    return filesystem, split_root_path(text)


def split_root_path(uri: str) -> str:
    """The path on its filesystem of an object store URI: ``bucket/key``, without the scheme, the
    credentials (``key:secret@``) and the query."""
    rest = uri.partition("?")[0].partition("://")[2]
    authority, slash, path = rest.partition("/")
    return (authority.rpartition("@")[2] + slash + unquote(path)).rstrip("/")


@dataclass(frozen=True)
class RootFolder:
    """A folder on a storage root's filesystem (see the module docstring); ``name`` is a local path
    or a URI with its query."""

    name: str

    @classmethod
    def of(cls, folder: RootFolder | str | os.PathLike) -> RootFolder:
        return folder if isinstance(folder, RootFolder) else cls(os.fspath(folder))

    @property
    def local(self) -> bool:
        return is_local(self.name)

    @property
    def fs(self) -> pafs.FileSystem:
        return filesystem_of(self.name)[0]

    @property
    def path(self) -> str:
        return filesystem_of(self.name)[1]

    def file(self, name: str) -> str:
        """A file of the folder, as a path on :attr:`fs`."""
        return join(self.path, name)

    def sub(self, *names: str) -> RootFolder:
        return RootFolder(child(self.name, *names))

    def make(self) -> RootFolder:
        """Create it where folders exist (locally; an object store's folders are key prefixes)."""
        if self.local:
            Path(self.path).mkdir(parents=True, exist_ok=True)
        return self

    def write_table(self, name: str, table: pa.Table) -> str:
        """A Parquet file written whole (atomically: renamed into place, or one upload)."""
        if self.local:
            target = Path(self.path) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = temp_path(target)
            pq.write_table(table, temp, compression="zstd")
            publish_file(temp, target)
            return str(target)
        path = self.file(name)
        pq.write_table(table, path, filesystem=self.fs, compression="zstd")
        return path

    def read_table(self, name: str, columns: list[str] | None = None) -> pa.Table:
        return pq.read_table(self.file(name), columns=columns, filesystem=self.fs)

    def write_bytes(self, name: str, data: bytes) -> None:
        if self.local:
            target = Path(self.path) / name
            target.parent.mkdir(parents=True, exist_ok=True)
            temp = temp_path(target)
            temp.write_bytes(data)
            publish_file(temp, target)
            return
        with self.fs.open_output_stream(self.file(name)) as out:
            out.write(data)

    def read_bytes(self, name: str) -> bytes | None:
        try:
            with self.fs.open_input_stream(self.file(name)) as handle:
                return handle.read()
        except (FileNotFoundError, IsADirectoryError):
            return None

    def names(self) -> list[str]:
        """The files directly in the folder, sorted (none when it does not exist)."""
        return [i.base_name for i in listing(self.fs, self.path) if i.type == pafs.FileType.File]

    def remove(self) -> None:
        """The folder and everything in it, if it exists."""
        if self.local:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        with contextlib.suppress(FileNotFoundError, OSError):
            self.fs.delete_dir(self.path)

    def __str__(self) -> str:
        return self.name
