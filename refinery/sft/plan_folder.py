"""The SFT stages' plan folders (the dedup outcomes of ``sft_checked``, the selection of
``sft_selected``) on any storage root: a local folder, or a URI on an object store that the Ray
workers open (:class:`refinery.engine.root_folder.RootFolder`).

A plan folder is named by what fixes its results (``<root>/_shuffle/<stage>/<source>/<run>``), so a
repeated run over the same input stamps the same provenance; making a new one removes the source's
earlier plans (a changed input starts clean). The provenance records the folder relative to the
root, and a worker finds it again with :func:`refinery.engine.resume.under_root`: the URI keeps the
root's query (endpoint, options), never a pickled filesystem.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow.fs as pafs

from refinery.engine.root_folder import RootFolder
from refinery.fs import child, listing


def fresh_run_folder(base: Path | str, name: str) -> Path | str:
    """``base/name``, with every earlier folder under ``base`` removed first: a local
    :class:`~pathlib.Path` (created), or on an object store the URI (an object store has no empty
    folders: the files written under it make it)."""
    folder = RootFolder.of(base)
    if folder.local:
        root = Path(folder.path)
        if root.is_dir():
            for old in root.iterdir():
                shutil.rmtree(old, ignore_errors=True)
        (root / name).mkdir(parents=True)
        return root / name
    for info in listing(folder.fs, folder.path):
        if info.type == pafs.FileType.Directory:
            folder.sub(info.base_name).remove()
    return child(folder.name, name)


def plan_relative(plan_dir: tuple[str, ...], source: str, run: str) -> str:
    """A plan folder relative to the storage root: what the step's provenance records."""
    return "/".join([*plan_dir, source, run])
