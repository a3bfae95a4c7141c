"""Where the tasks of one partition write: its parts, its scratch files, and how they are committed.

Two layouts, one interface, chosen by the storage root (:func:`parts_target`):

- :class:`LocalTarget` (a local folder, the default): parts go to the staging folders of a
  :class:`refinery.storage.PartsWriter` (temporary file, then rename), and the commit writes each
  folder's manifest last and moves the folders into place (quarantine first).
- :class:`ObjectTarget` (``s3://…`` and other :mod:`pyarrow.fs` URIs, where renaming is not atomic):
  parts are written where they stay, named after the run (``part-00000-<run>.parquet``: an object
  appears whole when its upload completes); the commit writes the quarantine's manifest, then the
  documents' manifest (the commit point: readers read only the parts it lists,
  :class:`refinery.object_storage.ObjectStorage`), then deletes the parts no manifest lists.

Scratch files (an ingest's id keys, its done markers) live under :attr:`work`, on the same
filesystem, so every worker sees them; :meth:`clear_work` removes them. A run whose token names a
fingerprint (``retry-<fingerprint>``: :mod:`refinery.kernel.ingest_resume`) keeps its parts and
scratch files after a failure, for the retry; :meth:`sweep_other_attempts` removes those of other
fingerprints.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from refinery.fs import is_local, join, listing, local_path, split_root
from refinery.manifest import read_manifest_at, write_manifest, write_manifest_at
from refinery.paths import check_source_name
from refinery.storage import PART_PATTERN, REJECTED_DIR, PartsWriter, Storage, replace_partition
from refinery.tempfiles import clean_stray, fsync_tree, temp_path


def parts_target(
    root: str, asset: str, partition: str, token: str | None = None
) -> LocalTarget | ObjectTarget:
    """The target of ``asset[partition]`` under the storage ``root`` (a path or a URI); ``token``
    names the run (None: a new run, on the driver)."""
    if is_local(root):
        return LocalTarget(root, asset, partition, token)
    return ObjectTarget(root, asset, partition, token)


def committed_parts(root: str, asset: str, partition: str) -> list[str]:
    """The part names of ``asset[partition]``'s committed output where a run writes in place (an
    object store: :meth:`ObjectTarget.committed_parts`); none on a local root."""
    if is_local(root):
        return []
    return ObjectTarget(root, asset, partition, "committed").committed_parts()


class _SinkPart:
    """A part streamed to a sink; ``finish`` publishes it (a local rename, or the upload's end)."""

    def __init__(self, sink: Any, schema: pa.Schema, finish, discard):
        self._writer = pq.ParquetWriter(sink, schema, compression="zstd")
        self._finish, self._discard = finish, discard

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table)

    def __enter__(self) -> _SinkPart:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._writer.close()
        (self._finish if exc_type is None else self._discard)()


class LocalTarget:
    """Parts in staging folders moved into place at commit (see the module's docstring)."""

    def __init__(self, root: str, asset: str, partition: str, token: str | None = None):
        self.storage = Storage(local_path(root))
        self.writer = PartsWriter(self.storage, asset, partition, token)
        self.token = self.writer.token
        self.fs = pafs.LocalFileSystem()
        final = self.storage.parts_path(asset, partition)
        self.work = str(final.parent / f".{final.name}.work.{self.token}.tmp")  # swept if the driver dies

    def part_path(self, index: int, rejected: bool = False) -> str:
        return str(self.writer.staging(rejected) / self.writer.part_name(index))

    def open_part(self, index: int, schema: pa.Schema, rejected: bool = False) -> _SinkPart:
        """A part, renamed into its staging folder when complete. Not flushed here: the commit
        flushes every staged file before it writes a manifest (``fsync_tree``), and a run that dies
        before its commit is discarded whole. Why: a flush per part, and two per scratch file, were
        0.68 of 2.3 s of ingest's task path for 48 MB in 16 pieces, in one process under cProfile
        (benchmarks/RESULTS.md, "Ingest, embeddings and the corpus dedup on 1 vs 2 Ray workers,
        seventh session")."""
        target = Path(self.part_path(index, rejected))
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(target)
        return _SinkPart(
            str(temp), schema, lambda: os.replace(temp, target), lambda: temp.unlink(missing_ok=True)
        )

    def read_part(self, index: int) -> pa.Table:
        return pq.read_table(self.part_path(index))

    def put_table(self, path: str, table: pa.Table) -> None:
        """A whole file (a part rewritten, a scratch file), atomically; flushed, if a part, by the
        commit (see :meth:`open_part`), never if a scratch file (the run's own, removed at its end)."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(target)
        pq.write_table(table, temp, compression="zstd")
        os.replace(temp, target)

    def tables(self, folder: str) -> list[pa.Table]:
        return [pq.read_table(p) for p in sorted(Path(folder).glob("*.parquet"))]

    def put_bytes(self, path: str, data: bytes) -> None:
        """A small scratch file (a done marker), atomically: written aside, then renamed."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = temp_path(target)
        temp.write_bytes(data)
        os.replace(temp, target)

    def clear_folder(self, folder: str) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    def clear_work(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def committed_parts(self) -> list[str]:
        """Local parts are staged aside and moved into place: a run never writes over the committed
        output, whatever its token (see :meth:`ObjectTarget.committed_parts`)."""
        return []

    def sweep_other_attempts(self, prefix: str) -> None:
        """Remove the staging and scratch folders that other tokens starting with ``prefix`` left
        (failed attempts over another input)."""
        writer = self.writer
        for rejected in (False, True):
            final = self.storage.parts_path(writer.asset, writer.partition, rejected)
            if not final.parent.is_dir():
                continue
            clean_stray(final.parent)  # and the temporaries of dead writers, as a run of its own token does
            for kind in ("parts", "work"):
                for old in final.parent.glob(f".{final.name}.{kind}.{prefix}*.tmp"):
                    if old.name != f".{final.name}.{kind}.{self.token}.tmp":
                        shutil.rmtree(old, ignore_errors=True)

    def commit(self, parts: int, provenance: dict) -> tuple[Path, Path]:
        writer, storage = self.writer, self.storage
        expected = [writer.part_name(i) for i in range(parts)]
        _check(
            expected,
            {r: [p.name for p in writer.staging(r).glob(PART_PATTERN)] for r in (False, True)},
            writer,
        )
        located = {}
        for rejected in (True, False):  # quarantine first: who finds the documents finds their rejects
            staging = writer.staging(rejected)
            for entry in staging.iterdir():  # temporaries of tasks whose worker died (the task was rerun)
                if entry.name not in expected:
                    entry.unlink(missing_ok=True)
            write_manifest(staging, provenance)  # last: a folder with a manifest is complete
            fsync_tree(staging)
            final = storage.parts_path(writer.asset, writer.partition, rejected)
            single = (
                storage.rejected_path(writer.asset, writer.partition)
                if rejected
                else storage.path(writer.asset, writer.partition)
            )
            replace_partition(staging, final, single)
            located[rejected] = final
        return located[False], located[True]

    def abort(self) -> None:
        self.writer.abort()


class ObjectTarget:
    """Parts written in place under run names, committed by the manifest (see the module's docstring)."""

    def __init__(self, root: str, asset: str, partition: str, token: str | None = None):
        self.fs, self.base = split_root(root)
        self.asset, self.partition = asset, check_source_name(partition)
        self.token = token or temp_path(Path("x")).name.split(".")[2]
        self.work = join(self.base, "_work", asset, self.partition, self.token)

    def folder(self, rejected: bool = False) -> str:
        top = join(self.base, REJECTED_DIR, self.asset) if rejected else join(self.base, self.asset)
        return join(top, self.partition)

    def part_name(self, index: int) -> str:
        return f"part-{index:05d}-{self.token}.parquet"

    def part_path(self, index: int, rejected: bool = False) -> str:
        return join(self.folder(rejected), self.part_name(index))

    def open_part(self, index: int, schema: pa.Schema, rejected: bool = False) -> _SinkPart:
        # No folders to create: an object store's "folders" are the keys' prefixes.
        path = self.part_path(index, rejected)
        stream = self.fs.open_output_stream(path)
        # A failed task's object is never listed by a manifest; the commit or the next run deletes it.
        return _SinkPart(stream, schema, stream.close, stream.close)

    def read_part(self, index: int) -> pa.Table:
        return pq.read_table(self.part_path(index), filesystem=self.fs)

    def put_table(self, path: str, table: pa.Table) -> None:
        pq.write_table(table, path, filesystem=self.fs, compression="zstd")

    def tables(self, folder: str) -> list[pa.Table]:
        found = [i.path for i in listing(self.fs, folder) if i.path.endswith(".parquet")]
        return [pq.read_table(p, filesystem=self.fs) for p in found]

    def put_bytes(self, path: str, data: bytes) -> None:
        """A small scratch file (a done marker): one object, whole or absent."""
        with self.fs.open_output_stream(path) as out:
            out.write(data)

    def clear_folder(self, folder: str) -> None:
        with contextlib.suppress(OSError):  # FileNotFoundError included
            self.fs.delete_dir(folder)

    def clear_work(self) -> None:
        self.clear_folder(self.work)

    def committed_parts(self) -> list[str]:
        """The part names the committed output's manifest lists. Why a resumable run needs them:
        its parts are written in place under its token, and an ingest rewrites a part after its
        first writing (:func:`refinery.kernel.ingest_tasks.fix_piece`); a run over the same input
        after a commit must not write over the parts a reader is reading, so its fingerprint
        includes these names and gives another token."""
        manifest = read_manifest_at(self.fs, self.folder(False))
        return [p["name"] for p in manifest["parts"]] if manifest else []

    def sweep_other_attempts(self, prefix: str) -> None:
        """Remove what other tokens starting with ``prefix`` left (failed attempts over another
        input): their scratch folders, and their parts that no committed manifest lists."""
        work = join(self.base, "_work", self.asset, self.partition)
        for info in listing(self.fs, work):
            if info.base_name.startswith(prefix) and info.base_name != self.token:
                self.clear_folder(info.path)
        for rejected in (False, True):
            manifest = read_manifest_at(self.fs, self.folder(rejected))
            listed = {p["name"] for p in manifest["parts"]} if manifest else set()
            ours = f"-{self.token}.parquet"
            for info in listing(self.fs, self.folder(rejected)):
                name = info.base_name
                if f"-{prefix}" in name and not name.endswith(ours) and name not in listed:
                    self.fs.delete_file(info.path)

    def commit(self, parts: int, provenance: dict) -> tuple[str, str]:
        names = [self.part_name(i) for i in range(parts)]
        present = {r: [i.base_name for i in listing(self.fs, self.folder(r))] for r in (False, True)}
        _check(names, {r: [n for n in present[r] if n in names] for r in (False, True)}, self)
        for rejected in (True, False):  # the documents' manifest last: the commit point
            write_manifest_at(self.fs, self.folder(rejected), names, provenance)
        for rejected in (False, True):  # older runs' parts and those of tasks that died
            for name in present[rejected]:
                if name.startswith("part-") and name not in names:
                    self.fs.delete_file(join(self.folder(rejected), name))
        return self.folder(False), self.folder(True)

    def abort(self) -> None:
        for rejected in (False, True):
            for info in listing(self.fs, self.folder(rejected)):
                if info.base_name.endswith(f"-{self.token}.parquet"):
                    self.fs.delete_file(info.path)


def _check(expected: list[str], found: dict[bool, list[str]], target: Any) -> None:
    """Every part of both folders is there, or nothing is committed."""
    for rejected, names in found.items():
        if sorted(names) != sorted(expected):
            raise RuntimeError(
                f"{target.asset}[{target.partition}]: {len(names)} of {len(expected)} "
                f"{'quarantine ' if rejected else ''}parts were written; nothing committed"
            )
