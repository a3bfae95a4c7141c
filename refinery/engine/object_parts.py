"""The Ray engine's parts on an object store root: written in place by the workers, committed by the
manifest, resumable after a failed attempt.

On a local root a stage split over workers stages its parts in folders that are renamed into place
(:class:`refinery.engine.resume.ResumableParts`). An object store has no atomic rename, so here each
worker writes its slice's two parts straight into the partition's folders, named after the attempt
(``part-00000-retry-<fingerprint>.parquet``: :class:`refinery.kernel.parts_target.ObjectTarget`),
then its done marker, an object under ``<root>/_work/<asset>/<partition>/retry-<fingerprint>/``. The
driver commits by writing the quarantine's manifest, then the output's (the commit point: readers
read only the parts a manifest lists), and deletes every part no manifest lists.

Nothing a reader sees changes before that commit: a failed or killed attempt leaves parts that no
manifest names (and its markers). The retry computes the same fingerprint, so it finds them and
sends only the slices without a valid marker; a changed input gets another fingerprint, and the
next commit of the partition deletes the older attempts' parts. A step run again over the same input
(the same fingerprint, after a commit) uploads the same bytes under the names the manifest lists: a
reader of the committed output reads the same rows throughout.

What travels to the workers is the root's URI (its query carries the endpoint and options; the
credentials come from the query or each worker's environment), never a filesystem object.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from refinery.engine.resume import TOKEN_PREFIX, read_marker, write_marker
from refinery.engine.root_folder import RootFolder
from refinery.fs import child, listing, uri
from refinery.kernel.parts_target import ObjectTarget


class ObjectResumableParts:
    """The :class:`~refinery.engine.resume.ResumableParts` interface (``write_part``, ``done``,
    ``mark_done``, ``commit``, ``abort``) on an object store root (see the module docstring)."""

    def __init__(self, root: str, asset: str, partition: str, key: str, provenance: dict, sweep: bool = True):
        self.root, self.asset, self.partition, self.key = root, asset, partition, key
        self.provenance = provenance
        self.token = f"{TOKEN_PREFIX}{key}"
        self._target: ObjectTarget | None = None
        if sweep:  # on the driver: other fingerprints' markers go (their parts go at the next commit)
            base = self.work_base()
            for info in listing(base.fs, base.path):
                if info.base_name.startswith(TOKEN_PREFIX) and info.base_name != self.token:
                    base.sub(info.base_name).remove()

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_target": None}  # the filesystem is opened again from the URI

    @property
    def target(self) -> ObjectTarget:
        if self._target is None:
            self._target = ObjectTarget(self.root, self.asset, self.partition, self.token)
        return self._target

    def work_base(self) -> RootFolder:
        return RootFolder(child(self.root, "_work", self.asset, self.partition))

    def markers(self) -> RootFolder:
        return self.work_base().sub(self.token)

    def write_part(self, index: int, table: pa.Table, rejected: bool = False) -> str:
        path = self.target.part_path(index, rejected)
        self.target.put_table(path, table)  # a retried slice uploads the same name again
        return path

    def done(self, index: int) -> Any | None:
        return read_marker(self.markers(), index)

    def mark_done(self, index: int, info: Any) -> None:
        files = [self.target.part_path(index, rejected) for rejected in (False, True)]
        write_marker(self.markers(), index, files, info)

    def commit(self, parts: int) -> tuple[str, str]:
        """Both manifests (the quarantine's first), the unlisted parts deleted, the markers dropped;
        the folders as URIs (what the metadata shows)."""
        folder, rejected = self.target.commit(parts, self.provenance)
        self.markers().remove()
        return uri(self.target.fs, folder), uri(self.target.fs, rejected)

    def abort(self) -> None:
        """What this attempt wrote: its parts and markers (a retry then starts clean)."""
        self.target.abort()
        self.markers().remove()
