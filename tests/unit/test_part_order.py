"""Part files are read in the order of their numbers at any count: part-100000 after part-99999
(five-digit names sort as text only below 100,000 parts)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.storage import PART_NAME, PartsWriter, Storage, parquet_files, part_order


def test_parts_past_five_digits_read_in_number_order(tmp_path):
    writer = PartsWriter(Storage(tmp_path), "stage", "src")
    schema = pa.schema([pa.field("n", pa.int64())])
    indexes = [0, 9, 99_999, 100_000, 100_001, 1_000_000]
    for i in indexes:
        writer.write_part(i, pa.table({"n": [i]}, schema=schema))
    staging = writer.staging()
    assert [pq.read_table(f)["n"][0].as_py() for f in parquet_files(staging)] == indexes
    assert sorted(p.name for p in staging.iterdir())[-1] == "part-99999.parquet"  # as text: last
    assert all(PART_NAME.match(p.name) for p in staging.iterdir())  # kept by a commit, not swept
    assert sorted(["part-x.parquet", "part-100000.parquet"], key=part_order)[0] == "part-100000.parquet"
