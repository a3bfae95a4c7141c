"""StageLookup: the rows of stage files by (source, id), across row groups and part files, with a
file replaced on disk re-read and decoded row groups held within the byte budget."""

from __future__ import annotations

import duckdb
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from refinery.retrieval import StageLookup
from refinery.storage import Storage


def _frame(source: str, n: int, tag: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": [f"{source}-{i:03d}" for i in range(n)],
            "text": [f"{tag} text {i} " * 20 for i in range(n)],
            "source": source,
            "score": [i / n for i in range(n)],
            "raw": [b"\x00\x01"] * n,  # binary: never part of a hit
        }
    )


def _write(path, frame: pd.DataFrame, row_group_size: int = 7) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path, row_group_size=row_group_size)


def _duckdb_rows(files: list[str], hits: pd.DataFrame) -> pd.DataFrame:
    """What describe_hits read before: a DuckDB join of the files with the hits."""
    con = duckdb.connect()
    con.register("hits", pa.Table.from_pandas(hits[["source", "id"]], preserve_index=False))
    return con.execute(
        f"SELECT t.id, t.text, t.source, t.score FROM read_parquet({files!r}, union_by_name = true) t "
        "JOIN (SELECT DISTINCT source, id FROM hits) h ON t.source = h.source AND t.id = h.id"
    ).df()


def test_rows_match_a_join_across_row_groups_and_parts(tmp_path):
    storage = Storage(tmp_path)
    _write(storage.path("quality_scored", "news"), _frame("news", 40, "a"))
    parts = storage.parts_path("quality_scored", "web")
    web = _frame("web", 30, "b")
    _write(parts / "part-00000.parquet", web.iloc[:15])
    _write(parts / "part-00001.parquet", web.iloc[15:])
    hits = pd.DataFrame(
        {
            "source": ["news", "news", "web", "web", "news"],
            "id": ["news-003", "news-031", "web-002", "web-029", "nope"],
        }
    )
    got = StageLookup().rows(storage, "quality_scored", hits, rejected=False)
    assert "raw" not in got.columns
    files = [str(p) for s in ("news", "web") for p in storage.files("quality_scored", s)]
    want = _duckdb_rows(files, hits)
    key = ["source", "id"]
    got = got.sort_values(key).reset_index(drop=True)[want.columns]
    pd.testing.assert_frame_equal(got, want.sort_values(key).reset_index(drop=True), check_dtype=False)
    assert sorted(got["id"]) == ["news-003", "news-031", "web-002", "web-029"]


def test_a_replaced_file_is_read_again_and_the_budget_holds(tmp_path):
    storage = Storage(tmp_path)
    path = storage.path("pretrain_corpus", "news")
    _write(path, _frame("news", 40, "old"))
    lookup = StageLookup(budget_bytes=1)  # every decoded row group is dropped but the last
    hits = pd.DataFrame({"source": ["news"] * 3, "id": ["news-000", "news-020", "news-039"]})
    first = lookup.rows(storage, "pretrain_corpus", hits, rejected=False)
    assert set(first["text"].str.split().str[0]) == {"old"} and len(lookup._groups) == 1
    _write(path.with_suffix(".tmp"), _frame("news", 25, "new"))
    path.with_suffix(".tmp").replace(path)  # how storage publishes: an atomic rename
    second = lookup.rows(storage, "pretrain_corpus", hits, rejected=False)
    assert sorted(second["id"]) == ["news-000", "news-020"]
    assert set(second["text"].str.split().str[0]) == {"new"}
    assert lookup.rows(storage, "pretrain_corpus", hits, rejected=True).empty  # no rejected file
