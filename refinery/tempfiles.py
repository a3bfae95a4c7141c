"""Temporary files that can be told apart from finished ones, flushed before they count, and
swept up when the process that wrote them was killed.

Every output is written under a temporary name beside its target and renamed into place when
complete, so a reader never sees half a file. The temporary name carries the writing host and
process id (``.<name>.<host>-<pid>-<random>.tmp``): a later writer on the same host removes the
temporaries of processes that no longer run (a SIGKILLed step leaves its temporary behind), and
never those of a process that is still writing. Before a rename makes data visible, the file is
fsynced, and after it the folder, so a committed output survives a power cut.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOST = re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"
_STRAY = re.compile(r"^\..+\.(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-[0-9a-f]{8}\.(tmp|old)$")


def temp_path(target: Path, kind: str = "tmp") -> Path:
    """A temporary name beside ``target`` that names this host and process."""
    return target.with_name(f".{target.name}.{_HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}.{kind}")


def fsync_file(path: Path) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename or a new entry in ``path`` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(path: Path) -> None:
    """Every file of a folder written as a whole (parts, shards, frames), then the folders."""
    for root, _, files in os.walk(path):
        for name in files:
            fsync_file(Path(root) / name)
        fsync_dir(Path(root))


def publish_file(temp: Path, target: Path) -> None:
    """Flush ``temp``, rename it to ``target`` (atomically replacing it), flush the folder."""
    fsync_file(temp)
    os.replace(temp, target)
    fsync_dir(target.parent)


def pid_alive(pid: int) -> bool:
    """Signal 0 to ``pid`` (a negative one: a process group) finds a process."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stray(folder: Path) -> list[Path]:
    """Remove the temporaries in ``folder`` left by dead processes of this host; returns them."""
    removed: list[Path] = []
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        match = _STRAY.match(entry.name)
        if not match or match["host"] != _HOST or pid_alive(int(match["pid"])):
            continue
        if entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


@contextmanager
def staging_dir(folder: Path, name: str = "staging") -> Iterator[Path]:
    """A scratch folder inside ``folder`` named like a temporary (so a killed writer's is swept
    by :func:`clean_stray`), removed when the block ends."""
    folder.mkdir(parents=True, exist_ok=True)
    clean_stray(folder)
    path = temp_path(folder / name)
    path.mkdir()
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
