"""File access confined to configured roots.

An agent names files on this machine (a folder to add as a source). Each path is resolved the way
the operating system will follow it — ``~`` expanded, symlinks followed, ``..`` collapsed — and
must then lie inside one of the roots the server was started with. A path that climbs with ``..``
is refused outright, even when it would land inside a root, so an agent cannot probe the tree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path


class ForbiddenPath(PermissionError):
    """A path outside the allowed roots (directly, through ``..`` or through a symlink)."""


@dataclass(frozen=True)
class Roots:
    """The folders an agent may read from (resolved once, at start)."""

    folders: tuple[Path, ...]

    @classmethod
    def of(cls, folders: Iterable[str | os.PathLike]) -> Roots:
        resolved = []
        for folder in folders:
            path = Path(folder).expanduser().resolve()
            if not path.is_dir():
                raise ValueError(f"root {folder} is not a folder")
            resolved.append(path)
        return cls(tuple(resolved))

    def describe(self) -> list[str]:
        return [str(f) for f in self.folders]

    def check(self, raw: str | os.PathLike) -> Path:
        """The resolved path, or :class:`ForbiddenPath` saying why it is refused."""
        text = os.fspath(raw)
        if not text:
            raise ForbiddenPath("empty path")
        given = Path(text).expanduser()
        if ".." in given.parts:
            raise ForbiddenPath(f"{text}: paths with '..' are refused; name the file inside a root directly")
        if not given.is_absolute():
            raise ForbiddenPath(f"{text}: give an absolute path inside one of the roots {self.describe()}")
        resolved = given.resolve()
        if not self._inside(resolved):
            if self._inside(Path(os.path.normpath(given))):
                raise ForbiddenPath(
                    f"{text}: a symlink leads outside the allowed roots (to {resolved}); refused"
                )
            raise ForbiddenPath(f"{text}: outside the allowed roots {self.describe()}")
        return resolved

    def walk(self, folder: Path) -> Iterator[Path]:
        """Every regular file under a checked folder; a symlink inside it that leads out is refused."""
        for path in sorted(folder.rglob("*")):
            if path.is_symlink() and not self._inside(path.resolve()):
                raise ForbiddenPath(
                    f"{path}: a symlink inside the folder leads outside the allowed roots (to "
                    f"{path.resolve()}); refused"
                )
            if path.is_file():
                yield path

    def _inside(self, path: Path) -> bool:
        return any(path == root or path.is_relative_to(root) for root in self.folders)
