"""The trace as SQL: ``trace_steps`` and ``trace_documents`` views over the stage views.

- ``trace_steps``: every lineage piece with its step, the raw file and line the document came
  from and every column ``pretrain_corpus`` holds for it (its scores), text left out::

      SELECT source, id, file, quality_score FROM trace_steps WHERE split = 'train' AND step = 3

- ``trace_documents``: per document, where it went: ``status`` 'trained' (split, sequence, step,
  token span) or 'removed' (stage, reason, reason_detail) from every rejected table::

      SELECT * FROM trace_documents WHERE source = 'web' AND id = 'doc-17'

Made by :func:`create_trace_views` when the lineage table exists (``refinery sql`` and the
DuckDB catalog call it after the stage views).
"""

from __future__ import annotations

import duckdb

from refinery import names


def _existing(con: duckdb.DuckDBPyConnection) -> set[str]:
    return {r[0] for r in con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()}


def create_trace_views(con: duckdb.DuckDBPyConnection) -> list[str]:
    views = _existing(con)
    lineage = names.TRAINING_TOKENS
    if lineage not in views:
        return []
    corpus = names.PRETRAIN_CORPUS
    if corpus in views:
        con.execute(
            f"CREATE OR REPLACE VIEW trace_steps AS SELECT l.*, p.* EXCLUDE (source, id, text) "
            f'FROM "{lineage}" l LEFT JOIN "{corpus}" p ON l.source = p.source AND l.id = p.id'
        )
    else:
        con.execute(f'CREATE OR REPLACE VIEW trace_steps AS SELECT * FROM "{lineage}"')
    parts = [
        "SELECT source, id, 'trained' AS status, split, sequence, step, \"offset\", length, doc_start, "
        f'NULL::VARCHAR AS stage, NULL::VARCHAR AS reason, NULL::VARCHAR AS reason_detail FROM "{lineage}"'
    ]
    for view in sorted(v for v in views if v.startswith("rejected_")):
        stage = view.removeprefix("rejected_")
        columns = {r[0] for r in con.execute(f'DESCRIBE "{view}"').fetchall()}
        if not {"source", "id", "reason"} <= columns:
            continue
        detail = "reason_detail" if "reason_detail" in columns else "NULL::VARCHAR"
        parts.append(
            "SELECT source, id::VARCHAR AS id, 'removed' AS status, NULL AS split, NULL AS sequence, "
            "NULL AS step, "
            f"NULL AS \"offset\", NULL AS length, NULL AS doc_start, '{stage}' AS stage, reason, {detail} "
            f'AS reason_detail FROM "{view}"'
        )
    con.execute("CREATE OR REPLACE VIEW trace_documents AS " + " UNION ALL ".join(parts))
    return ["trace_steps", "trace_documents"]
