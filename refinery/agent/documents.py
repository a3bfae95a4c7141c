"""A document's path through the stages of its kind, and samples of the rows a stage rejected.

Both read the catalog's views (``<stage>`` and ``rejected_<stage>``) on the read-only connection of
:mod:`refinery.agent.readonly_sql`. A document is named by its ``id`` or by its inbox file (the path
relative to the source folder, or just the file name); a file of many records names each of them.
"""

from __future__ import annotations

import duckdb

from refinery import names
from refinery.agent.readonly_sql import connect_readonly
from refinery.paths import Layout

# Each kind's stages in order; a stage of the text chain may hand a row to a side stage instead
# (heuristic_filtered routes documents in other languages to multilingual_filtered).
CHAINS: dict[str, tuple[str, ...]] = {
    "text": (
        names.RAW_DOCUMENTS,
        names.CLEAN_DOCUMENTS,
        names.HEURISTIC_FILTERED,
        names.EXACT_DEDUPLICATED,
        names.FUZZY_DEDUPLICATED,
        names.PERPLEXITY_SCORED,
        names.QUALITY_SCORED,
        names.SEMANTIC_DEDUPLICATED,
        names.PRETRAIN_CORPUS,
    ),
    "sft": (names.RAW_SFT, names.SFT_CHECKED, names.SFT_SELECTED),
    "image_text": (names.RAW_IMAGE_TEXT, names.IMAGE_TEXT_CHECKED, names.CLIP_SCORED, names.CLIP_FILTERED),
    "video": (names.RAW_VIDEOS, names.VIDEO_KEYFRAMES),
}
SIDE_STAGES = {names.HEURISTIC_FILTERED: names.MULTILINGUAL_FILTERED}
HIDDEN_COLUMNS = {"raw", "meta", "image", "video_bytes", "embedding"}
TEXT_PREVIEW = 240
MAX_DOCUMENTS = 5


def _tables(con: duckdb.DuckDBPyConnection) -> dict[str, list[str]]:
    rows = con.execute(
        "SELECT table_name, column_name FROM information_schema.columns ORDER BY table_name, ordinal_position"
    ).fetchall()
    tables: dict[str, list[str]] = {}
    for table, column in rows:
        tables.setdefault(table, []).append(column)
    return tables


def _shown(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if key in HIDDEN_COLUMNS or isinstance(value, bytes | bytearray | list | dict):
            continue
        if isinstance(value, str) and len(value) > TEXT_PREVIEW:
            value = value[:TEXT_PREVIEW] + "…"
        out[key] = value
    return out


def _rows(con, table: str, columns: list[str], source: str, where: str, params: list) -> list[dict]:
    keep = [c for c in columns if c not in HIDDEN_COLUMNS]
    listing = ", ".join(f'"{c}"' for c in keep)
    source_clause = "source = ? AND " if "source" in columns else ""
    cursor = con.execute(
        f'SELECT {listing} FROM "{table}" WHERE {source_clause}({where})',
        ([source] if source_clause else []) + params,
    )
    names_ = [d[0] for d in cursor.description]
    return [dict(zip(names_, row, strict=True)) for row in cursor.fetchall()]


def _match(columns: list[str], document: str) -> tuple[str, list]:
    clauses, params = [], []
    if "id" in columns:
        clauses.append("id = ?")
        params.append(document)
    if "file" in columns:
        clauses.append("(file = ? OR file LIKE ?)")
        params += [document, "%/" + document.replace("%", r"\%").replace("_", r"\_")]
    if not clauses:
        return "false", []
    return " OR ".join(clauses), params


def explain_document(layout: Layout, source: str, document: str) -> dict:
    """Each stage's verdict on the document(s) named ``document`` in ``source``, and the outcome."""
    con = connect_readonly(layout)
    try:
        tables = _tables(con)
        kind = next(
            (
                k
                for k, chain in CHAINS.items()
                if any(s in tables or f"rejected_{s}" in tables for s in chain)
                and _has_source(con, tables, chain, source)
            ),
            None,
        )
        if kind is None:
            raise LookupError(
                f"no stage holds source {source!r}: has it been materialized? (see list_sources)"
            )
        chain = CHAINS[kind]
        ids = _document_ids(con, tables, chain, source, document)
        if not ids:
            raise LookupError(
                f"no document with id or inbox file {document!r} in source {source!r} at any {kind} stage"
            )
        return {
            "source": source,
            "kind": kind,
            "matched": len(ids),
            "documents": [_journey(con, tables, chain, source, doc_id) for doc_id in ids[:MAX_DOCUMENTS]],
            "more_documents_left_out": max(0, len(ids) - MAX_DOCUMENTS),
        }
    finally:
        con.close()


def _has_source(con, tables, chain, source) -> bool:
    for stage in chain:
        for table in (stage, f"rejected_{stage}"):
            if table in tables and "source" in tables[table]:
                found = con.execute(f'SELECT 1 FROM "{table}" WHERE source = ? LIMIT 1', [source]).fetchone()
                if found:
                    return True
    return False


def _document_ids(con, tables, chain, source, document) -> list[str]:
    """The ids the name matches, in inbox order (file, line), from the first stages that hold them."""
    seen: dict[str, tuple] = {}
    for stage in chain[:2]:
        for table in (stage, f"rejected_{stage}"):
            columns = tables.get(table)
            if not columns or "id" not in columns:
                continue
            where, params = _match(columns, document)
            for row in _rows(con, table, columns, source, where, params):
                if row.get("id") is not None:
                    seen.setdefault(row["id"], (str(row.get("file") or ""), row.get("line") or 0))
    return sorted(seen, key=lambda i: seen[i])


def _journey(con, tables, chain, source, doc_id) -> dict:
    steps, outcome = [], None
    for stage in chain:
        kept = _rows(con, stage, tables[stage], source, "id = ?", [doc_id]) if stage in tables else []
        rejected_table = f"rejected_{stage}"
        removed = (
            _rows(con, rejected_table, tables[rejected_table], source, "id = ?", [doc_id])
            if rejected_table in tables
            else []
        )
        if removed:
            row = _shown(removed[0])
            steps.append({"stage": stage, "status": "removed", **_reason(row)})
            outcome = f"removed by {stage}: {row.get('reason')}" + (
                f" ({row['reason_detail']})" if row.get("reason_detail") else ""
            )
            break
        if kept:
            steps.append({"stage": stage, "status": "kept", "row": _shown(kept[0])})
            continue
        side = SIDE_STAGES.get(stage)
        if side and (side in tables or f"rejected_{side}" in tables):
            routed = _rows(con, side, tables[side], source, "id = ?", [doc_id]) if side in tables else []
            side_rejected = (
                _rows(con, f"rejected_{side}", tables[f"rejected_{side}"], source, "id = ?", [doc_id])
                if f"rejected_{side}" in tables
                else []
            )
            if routed or side_rejected:
                status = "kept" if routed else "removed"
                detail = _shown(routed[0]) if routed else _reason(_shown(side_rejected[0]))
                steps.append({"stage": stage, "status": "routed", "to": side})
                steps.append({"stage": side, "status": status, **({"row": detail} if routed else detail)})
                outcome = f"routed by {stage} to {side} (another language), " + (
                    "kept there" if routed else f"removed there: {detail.get('reason')}"
                )
                break
        ran = _stage_ran(con, tables, stage, source)
        steps.append({"stage": stage, "status": "not present" if ran else "not run yet"})
        outcome = (
            f"not in {stage}'s output nor in its rejected rows"
            if ran
            else f"waiting: {stage} has not run for source {source!r}"
        )
        break
    if outcome is None:
        outcome = f"kept through every stage: in {chain[-1]}"
    first = next((s["row"] for s in steps if "row" in s), {})
    return {
        "id": doc_id,
        "file": first.get("file"),
        "line": first.get("line"),
        "outcome": outcome,
        "stages": steps,
    }


def _reason(row: dict) -> dict:
    keys = ("reason", "reason_detail", "duplicate_of", "similarity")
    return {
        **{k: row[k] for k in keys if row.get(k) is not None},
        "row": {k: v for k, v in row.items() if k not in keys},
    }


def _stage_ran(con, tables, stage, source) -> bool:
    return any(
        table in tables
        and "source" in tables[table]
        and con.execute(f'SELECT 1 FROM "{table}" WHERE source = ? LIMIT 1', [source]).fetchone()
        for table in (stage, f"rejected_{stage}")
    )


def rejected_sample(
    layout: Layout, stage: str, source: str | None = None, reason: str | None = None, limit: int = 5
) -> dict:
    """Counts by reason for the stage (and source), and a stable sample of the matching rejected rows."""
    con = connect_readonly(layout)
    try:
        tables = _tables(con)
        table = f"rejected_{stage}"
        if table not in tables:
            have = sorted(t.removeprefix("rejected_") for t in tables if t.startswith("rejected_"))
            raise LookupError(f"no rejected rows for stage {stage!r}; stages with rejected rows: {have}")
        columns = tables[table]
        clauses, params = [], []
        if source is not None:
            clauses.append("source = ?")
            params.append(source)
        where = " AND ".join(clauses) or "true"
        counts = con.execute(
            f'SELECT reason, count(*) FROM "{table}" WHERE {where} GROUP BY 1 ORDER BY 2 DESC, 1', params
        ).fetchall()
        if reason is not None:
            where += " AND reason = ?"
            params.append(reason)
        keep = ", ".join(f'"{c}"' for c in columns if c not in HIDDEN_COLUMNS)
        order = "hash(id)" if "id" in columns else "1"
        cursor = con.execute(
            f'SELECT {keep} FROM "{table}" WHERE {where} ORDER BY {order} LIMIT ?', [*params, max(1, limit)]
        )
        names_ = [d[0] for d in cursor.description]
        rows = [_shown(dict(zip(names_, r, strict=True))) for r in cursor.fetchall()]
        return {
            "stage": stage,
            "source": source,
            "reason": reason,
            "rejected_by_reason": {r: n for r, n in counts},
            "sample": rows,
        }
    finally:
        con.close()
