"""Vector search joined with SQL: the hits of a query as a table beside the stage views."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from refinery.paths import Layout, storage_root
from refinery.retrieval.search import search
from refinery.sql import connect, register_hits


def search_sql(
    home: str | Path | None,
    query: str,
    sql: str,
    k: int = 10,
    collection: str = "documents",
    exact: bool = False,
    **search_kwargs,
) -> pd.DataFrame:
    """Run ``sql`` over the stage views with the hits of ``query`` in ``vector_hits``."""
    layout = Layout.at(home)
    hits = search(
        query, k, home=layout.home, collection_name=collection, exact=exact, with_stage=False, **search_kwargs
    )
    con = connect(storage_root(layout))  # $REFINERY_STORAGE_ROOT when set, as `refinery sql`
    try:
        register_hits(con, hits)
        return con.execute(sql).df()
    finally:
        con.close()
