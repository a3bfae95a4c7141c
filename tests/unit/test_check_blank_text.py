"""The non_empty_text invariant counts every empty, whitespace-only or null text, and no other."""

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.kernel.checks import invariant_checks
from refinery.kernel.runner import StageRun
from refinery.stats import UNICODE_SPACES, StageStats


def test_blank_texts_are_counted(tmp_path):
    blank = ["", " ", "\u3000\n", "".join(UNICODE_SPACES), None]
    kept = ["a", " a ", "\u200b", "\u3000x\n", "é"]  # a zero-width space is not whitespace
    table = pa.table({"id": [str(i) for i in range(10)], "text": blank + kept})
    pq.write_table(table, tmp_path / "out.parquet")
    pq.write_table(table.slice(0, 0), tmp_path / "rejected.parquet")
    run = StageRun(
        "a", "p", tmp_path / "out.parquet", tmp_path / "rejected.parquet", 0.0, StageStats(), table.schema
    )
    checks = {c.name: c for c in invariant_checks(run, 10)}
    assert checks["non_empty_text"].metadata == {"empty_rows": len(blank)}
    assert not checks["non_empty_text"].passed and checks["rows_accounted"].passed
