"""SQL over every stage with DuckDB: one view per asset and one per asset's rejected rows.

``refinery sql "SELECT reason, count(*) FROM rejected_heuristic_filtered GROUP BY 1"`` works
from the shell; :func:`connect` gives the same views to Python, and :func:`write_catalog`
saves them in a DuckDB file that any DuckDB client can open.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from refinery.storage import PART_PATTERN, REJECTED_DIR, STATS_DIR


def _views(storage_root: Path) -> dict[str, Path]:
    views: dict[str, Path] = {}
    if not storage_root.is_dir():
        return views
    for folder in sorted(p for p in storage_root.iterdir() if p.is_dir()):
        if folder.name == STATS_DIR:
            continue
        if folder.name == REJECTED_DIR:
            for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
                if _patterns(sub):
                    views[f"rejected_{sub.name}"] = sub
        elif _patterns(folder):
            views[folder.name] = folder
    return views


def _patterns(folder: Path) -> list[str]:
    """The globs that hold an asset's rows: single-file partitions and part folders (both layouts
    of the data contract); only those that match, since DuckDB refuses a glob with no file."""
    found = []
    if any(folder.glob("*.parquet")):
        found.append(str(folder / "*.parquet"))
    if any(folder.glob(f"*/{PART_PATTERN}")):
        found.append(str(folder / "*" / PART_PATTERN))
    return found


def _create_views(con: duckdb.DuckDBPyConnection, storage_root: Path) -> list[str]:
    names = []
    for name, folder in _views(storage_root).items():
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in _patterns(folder))
        con.execute(
            f'CREATE OR REPLACE VIEW "{name}" AS '
            f"SELECT * FROM read_parquet([{listing}], union_by_name = true)"
        )
        names.append(name)
    return names


def connect(storage_root: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    _create_views(con, storage_root)
    return con


def write_catalog(storage_root: Path, path: Path) -> list[str]:
    """A DuckDB database file holding the views (paths are absolute, data stays in Parquet)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        return _create_views(con, storage_root)
    finally:
        con.close()


def views(storage_root: Path) -> list[str]:
    return list(_views(storage_root))
