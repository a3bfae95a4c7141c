"""Versioned model files under ``$REFINERY_HOME/models/<asset>/``.

A model asset writes ``<asset>-<tag>-<sha12>.<ext>``: the name carries a content hash, so a file
never changes once written and a scored partition that records the path and hash can always say
which model scored it. Beside each file, ``<file>.json`` describes it (parameters, training sizes,
metrics); ``current.json`` names the latest one, by file name relative to the folder, so the home
stays relocatable. Older versions are kept: partitions scored with them still point at them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from refinery.names import TEXT_MODELS
from refinery.tempfiles import publish_file, temp_path

MODELS_DIR = "models"
CURRENT = "current.json"


def models_dir(home: Path, asset: str) -> Path:
    """``$REFINERY_HOME/models/<asset>`` (created on demand by :func:`publish`)."""
    return Path(home) / MODELS_DIR / asset


@lru_cache(maxsize=64)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """Content hash of a file, computed once per (path, size, mtime) in this process."""
    stat = Path(path).stat()
    return _sha256_cached(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


def write_json(path: Path, data: dict) -> None:
    """Atomically (temp file, then rename), so a reader never sees half a pointer."""
    temp = temp_path(path)
    temp.write_text(json.dumps(data, indent=1, sort_keys=True, default=str))
    publish_file(temp, path)


@dataclass(frozen=True)
class ModelArtifact:
    """One published model file and what its sidecar says about it."""

    path: Path
    sha256: str
    info: dict

    def provenance(self) -> dict:
        """What a scored partition records about the model (path, hash, and how it was made)."""
        keep = ("kind", "order", "normalization", "format", "source")
        return {
            "path": str(self.path),
            "sha256": self.sha256,
            **{k: self.info[k] for k in keep if k in self.info},
        }


def publish(folder: Path, stem: str, produced: Path, suffix: str, info: dict) -> ModelArtifact:
    """Move ``produced`` to ``folder/<stem>-<sha12><suffix>``, write its sidecar, point current.json at it.

    Publishing identical bytes again reuses the existing file (same name), so re-materializing a
    model asset on unchanged input changes nothing on disk.
    """
    folder.mkdir(parents=True, exist_ok=True)
    sha = file_sha256(produced)
    final = folder / f"{stem}-{sha[:12]}{suffix}"
    if final.exists() and file_sha256(final) == sha:
        produced.unlink()
    else:
        publish_file(produced, final)  # durable before the sidecar and current.json name it
    record = {**info, "file": final.name, "sha256": sha}
    write_json(final.with_name(final.name + ".json"), record)
    write_json(folder / CURRENT, record)
    return ModelArtifact(final, sha, record)


def current(folder: Path) -> ModelArtifact | None:
    """The model ``current.json`` names, or None when the asset was never materialized here."""
    pointer = folder / CURRENT
    if not pointer.exists():
        return None
    record = json.loads(pointer.read_text())
    path = folder / record["file"]
    if not path.exists():
        raise FileNotFoundError(
            f"{pointer} names {path}, which is missing: re-materialize the model asset "
            f"'{folder.name}' to write it again"
        )
    return ModelArtifact(path, record["sha256"], record)


def sidecar(path: Path) -> dict | None:
    """The description written beside a published model file, if there is one."""
    meta = path.with_name(path.name + ".json")
    return json.loads(meta.read_text()) if meta.exists() else None


# The models the text quality stages score with; each is published by the asset of the same name.
TEXT_MODEL_ASSETS = TEXT_MODELS


def missing_models(home: Path) -> list[str]:
    """Model assets not yet materialized under ``home`` (the quality stages cannot run without them)."""
    return [asset for asset in TEXT_MODEL_ASSETS if current(models_dir(home, asset)) is None]
