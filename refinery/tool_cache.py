"""A machine-wide cache of the tools that setup builds, shared by every clone of the repository.

``scripts/setup.sh`` trains the tiny CLIP and the tiny chat model and compiles KenLM's trainer into
``<repo>/.tools``. Those are minutes of CPU (the CLIP's 1,200 steps most of all) that a fresh clone,
such as CI's, would otherwise pay every time although the result depends only on the recipe (a
config hash) and not on the clone. So a finished folder is also kept under
``$REFINERY_TOOL_CACHE/<kind>/<key>/`` (default ``~/.cache/refinery/tools``, beside the ONNX exports of
:mod:`refinery.models.onnx_embedder`), and a clone whose ``.tools`` lacks it copies it from there.

The clone keeps its own copy, so nothing reads the cache at run time, and deleting the cache costs
one rebuild. ``REFINERY_TOOL_CACHE=off`` turns it off. Both directions are atomic (a temporary folder
renamed into place), so two setups at once never see half a folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

CACHE_ENV = "REFINERY_TOOL_CACHE"
OFF = {"off", "0", "none", "false"}


def cache_root() -> Path | None:
    """Where built tools are shared, or None when ``$REFINERY_TOOL_CACHE`` turns the cache off."""
    value = os.environ.get(CACHE_ENV)
    if value is not None and value.strip().lower() in OFF | {""}:
        return None
    if value:
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "refinery" / "tools"


def cached_folder(kind: str, key: str) -> Path | None:
    """The cache's folder for ``kind`` (e.g. ``tiny-clip``) and ``key`` (a config hash)."""
    root = cache_root()
    return None if root is None else root / kind / key


def _copy_atomically(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(source, staging)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)


def restore(kind: str, key: str, target: Path, is_complete: Callable[[Path], bool]) -> bool:
    """Copy the cached ``kind``/``key`` folder to ``target`` if the cache holds a complete one;
    whether it did. A cache that cannot be read is a miss, never an error: setup then builds."""
    source = cached_folder(kind, key)
    if source is None or not is_complete(source):
        return False
    try:
        _copy_atomically(source, target)
    except OSError:
        return False
    return is_complete(target)


def store(kind: str, key: str, source: Path) -> Path | None:
    """Keep a copy of the finished ``source`` folder for other clones; where (None when the cache is
    off or cannot be written: the clone's own copy is all that setup needs)."""
    target = cached_folder(kind, key)
    if target is None:
        return None
    try:
        _copy_atomically(source, target)
    except OSError:
        return None
    return target
