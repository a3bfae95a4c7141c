"""What is in the inbox: source folders per kind and a fingerprint of each one's files.

The sensor compares fingerprints with its cursor to request runs only for sources whose files
changed. A source whose files were modified within the settle time is left for a later tick,
so a copy in progress is not ingested half-written.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

from refinery.kernel.collector import source_files
from refinery.paths import SOURCE_NAME_RE, Layout


@dataclass(frozen=True)
class SourceState:
    name: str
    fingerprint: str
    files: int
    newest_mtime: float


@dataclass
class InboxScan:
    ready: dict[str, SourceState]
    settling: list[str]
    invalid: list[str]


def fingerprint(folder: Path) -> SourceState:
    digest = hashlib.sha1()
    newest, count = 0.0, 0
    for path in source_files(folder):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        newest = max(newest, stat.st_mtime)
        count += 1
    return SourceState(folder.name, digest.hexdigest()[:16], count, newest)


def scan(layout: Layout, kind: str, settle_seconds: float = 5.0, now: float | None = None) -> InboxScan:
    root = layout.inbox_kind(kind)
    now = time.time() if now is None else now
    result = InboxScan({}, [], [])
    if not root.is_dir():
        return result
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if not SOURCE_NAME_RE.match(folder.name):
            result.invalid.append(folder.name)
            continue
        state = fingerprint(folder)
        if state.files and now - state.newest_mtime < settle_seconds:
            result.settling.append(folder.name)
        else:
            result.ready[folder.name] = state
    return result


def inbox_version(layout: Layout, kind: str) -> str:
    """One fingerprint of every source folder of an inbox kind (names and file states), so a
    change anywhere in it — a file added, edited or removed — gives a new version."""
    digest = hashlib.sha1()
    for name, state in sorted(scan(layout, kind, settle_seconds=0).ready.items()):
        digest.update(f"{name}\0{state.fingerprint}\n".encode())
    return digest.hexdigest()[:16]
