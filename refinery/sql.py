"""SQL over every stage with DuckDB: one view per asset and one per asset's rejected rows.

``refinery sql "SELECT reason, count(*) FROM rejected_heuristic_filtered GROUP BY 1"`` works
from the shell; :func:`connect` gives the same views to Python, and :func:`write_catalog`
saves them in a DuckDB file that any DuckDB client can open.

Vector-aware additions: a ``vectors_<collection>`` view per collection of stored embeddings
(``source``, ``id``, ``embedding``: exact similarity in plain SQL with ``array_inner_product``), and
:func:`register_hits` / :func:`refinery.retrieval.search_sql.search_sql`, which put the hits of a
vector search in a ``vector_hits`` table so they join with every stage view on ``(source, id)``::

    SELECT h.rank, h.score, p.source, p.id, p.quality_score, left(p.text, 80) AS text
    FROM vector_hits h JOIN pretrain_corpus p USING (source, id) ORDER BY h.rank
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from refinery.fs import is_local, local_path, split_root
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
    of the data contract); only those that match, since DuckDB refuses a glob with no file.

    A part folder's glob skips hidden folders: the staging folders of a run in progress, or of a
    failed attempt kept for its retry (``.<source>.parts.retry-<fingerprint>.tmp``), hold parts that
    no commit has published (DuckDB's ``*`` matches a leading dot; ``[!.]*`` does not)."""
    found = []
    if any(folder.glob("*.parquet")):
        found.append(str(folder / "*.parquet"))
    if _committed_parts(folder):
        found.append(str(folder / "[!.]*" / PART_PATTERN))
    return found


def _committed_parts(folder: Path) -> list[Path]:
    """The part files of the asset's committed part folders (not the hidden staging folders)."""
    return sorted(p for p in folder.glob(f"*/{PART_PATTERN}") if not p.parent.name.startswith("."))


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


def _vector_views(con: duckdb.DuckDBPyConnection, storage_root: Path) -> list[str]:
    """``vectors_<collection>`` (source, id, embedding) for each collection whose embeddings are stored."""
    from refinery.vector_collections import COLLECTIONS

    names = []
    for which in COLLECTIONS.values():
        folder = storage_root / which.asset
        patterns = _patterns(folder) if folder.is_dir() else []
        if not patterns:
            continue
        # A partition is a file <source>.parquet, or a folder <source>/ of parts (written by workers).
        files = sorted(folder.glob("*.parquet")) + _committed_parts(folder)
        dims = {pq.read_schema(f).field(which.column).type.list_size for f in files}
        # Parquet has no fixed-size list: cast back to DuckDB's ARRAY so array_inner_product applies
        # (files of several dimensions keep the variable-length list, and the index refuses them).
        cast = f"::FLOAT[{dims.pop()}]" if len(dims) == 1 else ""
        listing = ", ".join("'" + p.replace("'", "''") + "'" for p in patterns)
        source = "regexp_extract(filename, '([^/]+)(/part-[0-9]+\\.parquet|\\.parquet)$', 1)"
        con.execute(
            f'CREATE OR REPLACE VIEW "vectors_{which.name}" AS '
            f"SELECT {source} AS source, id, "
            f'"{which.column}"{cast} AS embedding '
            f"FROM read_parquet([{listing}], union_by_name = true, filename = true)"
        )
        names.append(f"vectors_{which.name}")
    return names


def connect(storage_root: Path | str) -> duckdb.DuckDBPyConnection:
    """A connection with the views of a storage root: a local folder (or ``file://`` URI), or an
    object store URI (``s3://…``: the committed parts as registered Arrow datasets,
    :mod:`refinery.sql_views`)."""
    from refinery.tokens.views import create_trace_views

    con = duckdb.connect()
    if is_local(storage_root):
        storage_root = local_path(storage_root)
        _create_views(con, storage_root)
        _vector_views(con, storage_root)
    else:
        from refinery.sql_views import register_storage_views, register_vector_views

        register_storage_views(con, *split_root(storage_root))
        register_vector_views(con, *split_root(storage_root))
    create_trace_views(con)  # trace_steps, trace_documents (once training_tokens exists)
    return con


def register_hits(con: duckdb.DuckDBPyConnection, hits: pd.DataFrame, name: str = "vector_hits") -> str:
    """Vector search hits (columns such as query, rank, score, source, id) as a temporary table."""
    frame = hits.rename(columns={"partition": "source"})
    view = f"_{name}_frame"
    con.register(view, frame)
    try:
        con.execute(f'CREATE OR REPLACE TEMP TABLE "{name}" AS SELECT * FROM "{view}"')
    finally:
        con.unregister(view)
    return name


def write_catalog(storage_root: Path, path: Path) -> list[str]:
    """A DuckDB database file holding the views (paths are absolute, data stays in Parquet)."""
    if not is_local(storage_root):
        raise ValueError(
            f"a DuckDB catalog file cannot hold views over {storage_root} (an object store's views are "
            "Arrow datasets registered on a connection): use refinery.sql.connect(root)"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(path))
    try:
        from refinery.tokens.views import create_trace_views

        return _create_views(con, storage_root) + _vector_views(con, storage_root) + create_trace_views(con)
    finally:
        con.close()


def views(storage_root: Path) -> list[str]:
    return list(_views(storage_root))
