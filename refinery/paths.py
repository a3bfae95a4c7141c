"""Where Refinery keeps things: one home folder, with a fixed layout under it.

A single root (``REFINERY_HOME``, default ``.refinery`` under the current directory) keeps a
deployment relocatable: copy or mount the folder and every stage, index and report moves with it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "REFINERY_HOME"
# Where the assets' data lives when not under the home: a folder or a pyarrow.fs URI (s3://bucket/prefix?…)
STORAGE_ROOT_ENV = "REFINERY_STORAGE_ROOT"
DEFAULT_HOME = ".refinery"

# Partition keys become file names; keep them to characters that are safe on every filesystem
# and in URLs of the Dagster UI.
SOURCE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_home(home: str | os.PathLike | None = None) -> Path:
    """The home folder: the argument, else ``$REFINERY_HOME``, else ``./.refinery``."""
    raw = home if home not in (None, "") else os.environ.get(HOME_ENV) or DEFAULT_HOME
    return Path(raw).expanduser().resolve()


def check_source_name(name: str) -> str:
    """Reject source names that cannot serve as a partition key and file name."""
    if not SOURCE_NAME_RE.match(name):
        raise ValueError(
            f"source name {name!r} is not usable as a partition: use letters, digits, '.', '_' or '-' "
            "(starting with a letter or digit, at most 128 characters)"
        )
    return name


def storage_root(layout: Layout) -> str | Path:
    """The data's root: ``$REFINERY_STORAGE_ROOT`` when set (a folder or an object store URI), else
    the home's ``storage`` folder. What the ``refinery`` resource and ``refinery sql`` read."""
    return os.environ.get(STORAGE_ROOT_ENV) or layout.storage


@dataclass(frozen=True)
class Layout:
    """The folders under the home, named once so no module builds paths by hand."""

    home: Path

    @classmethod
    def at(cls, home: str | os.PathLike | None = None) -> Layout:
        return cls(resolve_home(home))

    @property
    def inbox(self) -> Path:
        return self.home / "inbox"

    def inbox_kind(self, kind: str) -> Path:
        return self.inbox / kind

    def inbox_source(self, kind: str, source: str) -> Path:
        return self.inbox / kind / check_source_name(source)

    @property
    def storage(self) -> Path:
        return self.home / "storage"

    @property
    def index(self) -> Path:
        return self.home / "index"

    @property
    def reports(self) -> Path:
        return self.home / "reports"

    @property
    def dagster_home(self) -> Path:
        return self.home / "dagster"
