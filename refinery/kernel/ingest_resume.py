"""What lets a retried ingest on a cluster skip the inbox pieces it already read: the source's
fingerprint, the plan kept under it, and a done marker per piece.

A distributed ingest (:mod:`refinery.kernel.ingest_tasks`) names its parts and scratch files with
a token ``retry-<fingerprint>``, the fingerprint of everything that decides them: the source's
files (names, sizes, modification times), the reader and its parameters, the provenance, and on an
object store the names of the committed output's parts (:meth:`ObjectTarget.committed_parts`).
When an attempt fails (a task's exception, a lost node, a killed step) nothing is removed, so the
retry, which computes the same fingerprint, finds:

- **the plan** (the pieces with their first line numbers, and the number of id-key buckets), kept
  by the first attempt: the retry reuses it rather than planning again, so it resumes even when
  the cluster it sees has another number of workers (a lost node), and no range is counted again;
- **a done marker per piece**, written by the piece's task after its two parts and its id keys,
  naming those files with their sizes and holding the task's result (statistics, counts, node). A
  marker counts only while every file it names is there with that size; otherwise the piece is
  read again. After the id resolution rewrites a piece (:func:`~refinery.kernel.ingest_tasks.fix_piece`)
  its task writes the marker again, with the new sizes and ``fixed`` set, so a retry neither reads
  nor fixes it again; a fix that died before its marker leaves sizes that no longer match (the
  piece is read again) or, by chance, the same sizes, and then the fix is applied again, which
  gives the same bytes (it sets ids, it does not add to them).

Anything that changes the fingerprint (a file added, edited or removed; other parameters; a new
version of the code) starts clean: other fingerprints' staging and scratch folders are removed
first (the targets' ``sweep_other_attempts``). Two runs of one partition with the same fingerprint at once
would share the folders; Dagster does not run a partition's step twice at once.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from refinery.fingerprints import fingerprint
from refinery.fs import file_sizes, join, listing
from refinery.kernel.collector import source_files

TOKEN_PREFIX = "retry-"
PLAN = "plan"


def source_state(folder: Path) -> list[tuple[str, int, int]]:
    """The source's files as the fingerprint sees them: relative name, size, modification time (ns)."""
    state = []
    for path in source_files(folder):
        stat = path.stat()
        state.append((path.relative_to(folder).as_posix(), stat.st_size, stat.st_mtime_ns))
    return state


def ingest_fingerprint(
    reader: type, folder: Path, params: BaseModel, provenance: dict, committed: list[str]
) -> str:
    """A short stable hash of what decides an ingest's parts (see the module docstring). The number
    of workers is not in it: the plan it shapes is kept under the fingerprint and reused by a retry."""
    body = [
        "ingest",
        f"{reader.__module__}.{reader.__qualname__}",
        source_state(folder),
        params.model_dump(mode="json"),
        provenance,
        committed,
    ]
    return fingerprint(*body)


def marker_path(target: Any, name: str) -> str:
    return join(target.work, "done", name)


def piece_marker(index: int) -> str:
    return f"piece-{index:09d}"


def marker_names(target: Any) -> list[str]:
    """The names of the markers there are (one listing of the folder)."""
    return [i.base_name for i in listing(target.fs, join(target.work, "done"))]


def write_marker(target: Any, name: str, files: list[str], info: Any) -> None:
    """``files`` (paths on the target's filesystem, all written before) are complete, and ``info``
    is what the driver needs of them: one small file, written whole."""
    body = {"files": dict(zip(files, file_sizes(target.fs, files), strict=True)), "info": info}
    target.put_bytes(marker_path(target, name), pickle.dumps(body))


def read_marker(target: Any, name: str) -> Any | None:
    """The marker's info, or None when it is missing, unreadable (written by another version of the
    code) or names a file that is gone or has another size."""
    try:
        with target.fs.open_input_stream(marker_path(target, name)) as handle:
            body = pickle.loads(handle.read())
    except (FileNotFoundError, IsADirectoryError):
        return None
    except Exception:  # another version's marker: redo what it marked
        return None
    names = list(body["files"])
    if file_sizes(target.fs, names) != [body["files"][n] for n in names]:
        return None
    return body["info"]
