"""The manifest of a parts folder: which parts, how many rows each, what made them; its hash is the
output's data version.

Written last, atomically (temporary file, then rename), into the folder before the folder is moved
into place, so a folder with a manifest is complete. The hash covers the part names, their row
counts and byte sizes and the provenance, not timestamps: the same rows written again by the same
code give the same version, and Dagster sees no change downstream.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pyarrow.parquet as pq

from refinery.part_files import parquet_files
from refinery.tempfiles import publish_file, temp_path

MANIFEST = "_manifest.json"


def build_manifest(folder: Path, provenance: dict) -> dict:
    parts = [
        {"name": f.name, "rows": pq.ParquetFile(f).metadata.num_rows, "bytes": f.stat().st_size}
        for f in parquet_files(folder)
    ]
    body = {"parts": parts, "rows": sum(p["rows"] for p in parts), "provenance": provenance}
    canonical = json.dumps(body, sort_keys=True, default=str).encode()
    return {**body, "version": hashlib.sha256(canonical).hexdigest()[:24]}


def write_manifest(folder: Path, provenance: dict) -> dict:
    """The manifest of ``folder``'s parts, written into it atomically; returns it."""
    manifest = build_manifest(folder, provenance)
    target = folder / MANIFEST
    temp = temp_path(target)
    temp.write_text(json.dumps(manifest, sort_keys=True, indent=1, default=str))
    publish_file(temp, target)
    return manifest


def read_manifest(folder: Path) -> dict | None:
    path = folder / MANIFEST
    return json.loads(path.read_text()) if path.is_file() else None


# -- on any pyarrow filesystem (an object store, where renaming is not atomic) ---------------------
def build_manifest_at(filesystem, folder: str, names: list[str], provenance: dict) -> dict:
    """The manifest of the parts ``names`` of ``folder`` on ``filesystem`` (in that order). The
    version hashes each part's place, rows and bytes, not its name (which names the writing run),
    so the same rows written again give the same version."""
    parts = []
    for name in names:
        path = f"{folder}/{name}"
        with filesystem.open_input_file(path) as handle:
            rows = pq.ParquetFile(handle).metadata.num_rows
        parts.append({"name": name, "rows": rows, "bytes": filesystem.get_file_info(path).size})
    body = {"parts": parts, "rows": sum(p["rows"] for p in parts), "provenance": provenance}
    canonical = {**body, "parts": [{**p, "name": f"part-{i:05d}.parquet"} for i, p in enumerate(parts)]}
    digest = hashlib.sha256(json.dumps(canonical, sort_keys=True, default=str).encode()).hexdigest()
    return {**body, "version": digest[:24]}


def write_manifest_at(filesystem, folder: str, names: list[str], provenance: dict) -> dict:
    """Write the manifest of ``names`` into ``folder``: one object written whole (its upload completes
    or it does not exist), after every part it lists, so it is the commit point of the folder."""
    manifest = build_manifest_at(filesystem, folder, names, provenance)
    with filesystem.open_output_stream(f"{folder}/{MANIFEST}") as out:
        out.write(json.dumps(manifest, sort_keys=True, indent=1, default=str).encode())
    return manifest


def read_manifest_at(filesystem, folder: str) -> dict | None:
    """The folder's manifest on ``filesystem``, or None (no committed output)."""
    try:
        with filesystem.open_input_stream(f"{folder}/{MANIFEST}") as handle:
            return json.loads(handle.read())
    except FileNotFoundError:
        return None
