"""SQL an agent may run: SELECT over the catalog, on a read-only DuckDB connection that can read
the stage files and nothing else.

Three locks, each enough for its own threat: the catalog (``reports/catalog.duckdb``, one view per
stage and per stage's rejected rows) is opened read-only, so no table or view changes; only SELECT
and EXPLAIN statements are accepted (``COPY … TO`` writes files even on a read-only database); and
file access is confined to the storage folder with DuckDB's ``allowed_directories``, the setting then
locked, so ``read_csv('/etc/passwd')``, ``ATTACH`` or ``INSTALL`` fail.
"""

from __future__ import annotations

import os
from pathlib import Path

import duckdb

from refinery.paths import Layout
from refinery.sql import views, write_catalog
from refinery.tempfiles import temp_path

ALLOWED_STATEMENTS = ("SELECT", "EXPLAIN")
CATALOG_FILE = "catalog.duckdb"


class ReadOnlyViolation(PermissionError):
    """A statement that would write, or is not a query."""


def catalog_path(layout: Layout) -> Path:
    return layout.reports / CATALOG_FILE


def _catalog_views(path: Path) -> set[str]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        return {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    finally:
        con.close()


def refresh_catalog(layout: Layout) -> Path:
    """The catalog, rewritten (to a temporary file, then renamed) when storage holds a stage it lacks."""
    path = catalog_path(layout)
    wanted = set(views(layout.storage))
    if path.is_file():
        try:
            if wanted <= _catalog_views(path):
                return path
        except duckdb.Error:
            pass  # unreadable or being written: write a fresh one
    temp = temp_path(path)
    write_catalog(layout.storage, temp)
    os.replace(temp, path)
    return path


def statement_types(con: duckdb.DuckDBPyConnection, sql: str) -> list[str]:
    return [str(s.type).rsplit(".", 1)[-1] for s in con.extract_statements(sql)]


def connect_readonly(layout: Layout) -> duckdb.DuckDBPyConnection:
    """The catalog, read-only, reading files under storage only (settings locked)."""
    path = refresh_catalog(layout)
    con = duckdb.connect(
        str(path),
        read_only=True,
        config={"autoload_known_extensions": False, "autoinstall_known_extensions": False},
    )
    storage = str(layout.storage.resolve()).replace("'", "''")
    con.execute(f"SET allowed_directories = ['{storage}/']")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def run_query(layout: Layout, sql: str, max_rows: int = 100) -> dict:
    """Columns, up to ``max_rows`` rows (JSON-ready) and whether more rows were left out."""
    con = connect_readonly(layout)
    try:
        try:
            kinds = statement_types(con, sql)
        except duckdb.Error as err:
            raise ValueError(f"SQL does not parse: {err}") from err
        if not kinds:
            raise ValueError("no SQL statement given")
        refused = [k for k in kinds if k not in ALLOWED_STATEMENTS]
        if refused:
            raise ReadOnlyViolation(
                f"only {' and '.join(ALLOWED_STATEMENTS)} statements run here (read-only catalog); "
                f"refused: {', '.join(refused)}"
            )
        if len(kinds) > 1:
            raise ValueError("one statement per call")
        cursor = con.execute(sql)
        columns = [d[0] for d in cursor.description or []]
        rows = cursor.fetchmany(max_rows + 1)
        return {
            "columns": columns,
            "rows": [[_plain(v) for v in row] for row in rows[:max_rows]],
            "row_count": min(len(rows), max_rows),
            "truncated": len(rows) > max_rows,
        }
    finally:
        con.close()


def _plain(value):
    """A DuckDB value as JSON can carry it (bytes shortened, arrays as lists, the rest as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value[:64]] + (["…"] if len(value) > 64 else [])
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)
