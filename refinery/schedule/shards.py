"""The documents of an ordered manifest, written in order, as Parquet shards a loader streams.

A manifest of ids in training order cannot be served fast from the corpus files: consecutive
positions point anywhere in any source, and a columnar file decodes a whole page to return one
row. So the schedule asset materialises each split once, in order: DuckDB joins the manifest
with ``pretrain_corpus`` (every source; out of core, spilling to disk if needed) and streams the
result sorted by position into ``shards/<split>/shard-NNNNN.parquet`` — ``shard_docs`` documents
per file, ``row_group_docs`` per row group, so a reader can skip what it does not need. Repeated
documents (several epochs) are written once per copy: the shards are what training reads.

Every shard's schema metadata carries the schedule's identity (a digest of the manifest), its
split, first position and ``docs_per_step``, so the loader can refuse a mix of two runs.
The shard folder is built beside the old one and swapped in by renames when complete
(:func:`write_shards`); the ``training_schedule`` asset builds it in a staging folder with
:func:`build_shards` and commits it through :mod:`refinery.table_store`, so it can also live on an
object store (uploaded, ``index.json`` last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from refinery.names import PRETRAIN_CORPUS
from refinery.storage import Storage
from refinery.tempfiles import clean_stray, fsync_dir, fsync_tree, temp_path

SHARD_META_KEY = b"refinery_schedule"
INDEX_FILE = "index.json"


def manifest_digest(manifest: pa.Table) -> str:
    """Identity of a schedule: the ordered (split, position, source, id, epoch) rows."""
    h = hashlib.blake2b(digest_size=12)
    for name in ("split", "position", "source", "id", "epoch"):
        for chunk in manifest.column(name).chunks:
            for buf in chunk.buffers():
                if buf is not None:
                    h.update(buf)
    return h.hexdigest()


def shard_dir(root: Path, split: str) -> Path:
    return root / "shards" / split


def write_shards(
    storage: Storage,
    manifest: pa.Table,
    root: Path,
    docs_per_step: int,
    shard_docs: int,
    row_group_docs: int,
    corpus_asset: str = PRETRAIN_CORPUS,
    split_names: list[str] | None = None,
) -> dict[str, dict]:
    """Materialise every split of ``manifest`` under the local folder ``root/shards``; returns
    per-split counts. The folder is built beside the old one and swapped in by renames."""
    root.mkdir(parents=True, exist_ok=True)
    clean_stray(root)  # staging folders of killed runs
    staging = temp_path(root / "shards")
    staging.mkdir(parents=True)
    try:
        summary = build_shards(storage, manifest, staging, docs_per_step, shard_docs, row_group_docs,
                               corpus_asset, split_names)  # fmt: skip
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    final = root / "shards"
    fsync_tree(staging)  # every shard durable before the folder becomes visible
    old = temp_path(final, "old")
    if final.exists():
        os.replace(final, old)
    os.replace(staging, final)
    fsync_dir(root)
    shutil.rmtree(old, ignore_errors=True)
    return summary


def build_shards(
    storage,
    manifest: pa.Table,
    staging: Path,
    docs_per_step: int,
    shard_docs: int,
    row_group_docs: int,
    corpus_asset: str = PRETRAIN_CORPUS,
    split_names: list[str] | None = None,
) -> dict[str, dict]:
    """Every split of ``manifest`` into the new local folder ``staging`` (its ``index.json`` last),
    reading the corpus from ``storage`` (a local root or an object store); per-split counts.

    ``index.json`` lists every split (``split_names`` too, with 0 documents when the manifest has
    none), so a loader can tell an empty split from a misspelt one."""
    from refinery.table_store import register_files

    schedule_id = manifest_digest(manifest)
    sources = sorted(set(manifest.column("source").to_pylist()))
    files = [f for s in sources for f in storage.files(corpus_asset, s)]
    summary: dict[str, dict] = {}
    import duckdb  # on use: a second of import time for every process that loads the definitions

    con = duckdb.connect()
    try:
        con.register("manifest", manifest)
        register_files(
            con, storage, "corpus", files, {"source": "VARCHAR", "id": "VARCHAR", "text": "VARCHAR"}
        )
        for split in sorted(set(manifest.column("split").to_pylist())):
            expected = int(
                con.sql("SELECT count(*) FROM manifest WHERE split = ?", params=[split]).fetchall()[0][0]
            )
            reader = con.sql(
                "SELECT m.position, m.step, m.phase, m.domain, m.source, m.id, m.epoch, m.replay, c.text "
                "FROM manifest m JOIN corpus c ON m.source = c.source AND m.id = c.id "
                "WHERE m.split = ? ORDER BY m.position",
                params=[split],
            ).to_arrow_reader(row_group_docs)
            written = _write_split(
                reader,
                staging / split,
                split,
                schedule_id,
                docs_per_step,
                shard_docs,
                row_group_docs,
                expected,
            )
            summary[split] = {"documents": written, "shards": len(list((staging / split).glob("*.parquet")))}
        for name in split_names or []:
            summary.setdefault(name, {"documents": 0, "shards": 0})
        index = {"schedule_id": schedule_id, "docs_per_step": docs_per_step, "splits": summary}
        (staging / INDEX_FILE).write_text(json.dumps(index, indent=1, sort_keys=True))
    finally:
        con.close()
    return summary


def _write_split(
    reader,
    folder: Path,
    split: str,
    schedule_id: str,
    docs_per_step: int,
    shard_docs: int,
    row_group_docs: int,
    expected: int,
) -> int:
    folder.mkdir(parents=True)
    schema = pa.schema(
        [
            pa.field("position", pa.int64()),
            pa.field("step", pa.int64()),
            pa.field("phase", pa.int32()),
            pa.field("domain", pa.string()),
            pa.field("source", pa.string()),
            pa.field("id", pa.string()),
            pa.field("epoch", pa.int32()),
            pa.field("replay", pa.bool_()),
            pa.field("text", pa.large_string()),
        ]
    )

    def open_shard(index: int) -> pq.ParquetWriter:
        meta = {
            "schedule_id": schedule_id,
            "split": split,
            "shard": index,
            "first_position": index * shard_docs,
            "docs_per_step": docs_per_step,
            "total": expected,
        }
        return pq.ParquetWriter(
            folder / f"shard-{index:05d}.parquet",
            schema.with_metadata({SHARD_META_KEY: json.dumps(meta).encode()}),
            compression="zstd",
        )

    writer, shard, in_shard, total = None, -1, 0, 0
    rows = _RowSource(reader, schema)
    try:
        while not rows.exhausted():
            if writer is None or in_shard == shard_docs:
                if writer is not None:
                    writer.close()
                shard += 1
                writer, in_shard = open_shard(shard), 0
            # Row groups restart at every shard's first row, so they never straddle two files.
            table = rows.take(min(row_group_docs, shard_docs - in_shard))
            writer.write_table(table, row_group_size=row_group_docs)
            in_shard += table.num_rows
            total += table.num_rows
    finally:
        if writer is not None:
            writer.close()
    if total != expected:
        raise RuntimeError(
            f"split {split!r}: the manifest lists {expected} documents but only {total} were found in "
            "pretrain_corpus: the corpus changed since the mixture and splits were made; re-materialize them"
        )
    return total


class _RowSource:
    """The query's record batches as a stream from which tables of a given size are taken."""

    def __init__(self, reader, schema: pa.Schema):
        self._batches = iter(reader)
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._rows = 0
        self._done = False

    def _fill(self, n: int) -> None:
        while self._rows < n and not self._done:
            batch = next(self._batches, None)
            if batch is None:
                self._done = True
            elif batch.num_rows:
                self._pending.append(pa.Table.from_batches([batch]).cast(self._schema))
                self._rows += batch.num_rows

    def exhausted(self) -> bool:
        self._fill(1)
        return self._rows == 0

    def take(self, n: int) -> pa.Table | None:
        self._fill(n)
        if self._rows == 0:
            return None
        table = pa.concat_tables(self._pending)
        head, rest = table.slice(0, n), table.slice(n)
        self._pending, self._rows = ([rest] if rest.num_rows else []), rest.num_rows
        return head


def read_shard_meta(path: Path | str, filesystem=None) -> dict:
    raw = (pq.read_schema(str(path), filesystem=filesystem).metadata or {}).get(SHARD_META_KEY)
    if raw is None:
        raise ValueError(f"{path} is not a schedule shard (no {SHARD_META_KEY.decode()} metadata)")
    return json.loads(raw)
