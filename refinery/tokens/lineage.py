"""The lineage table: every packed sequence's pieces, and the step each sequence trains in.

One row per (sequence, document) overlap, sorted by (split, sequence, offset)::

    split, sequence, step, offset, length, domain, source, id, position, epoch, doc_start, doc_tokens

``offset``/``length`` locate the piece in the sequence, ``doc_start`` in the document's tokens
(``doc_tokens`` long, EOS included); ``position`` and ``epoch`` are the document's place in the
training schedule. A global step holds G = micro_batch_size × data_parallel_size ×
grad_accumulation sequences: step t is sequences [tG, (t+1)G), rank r reads the r-th contiguous
slice of m = G / R of them (as :mod:`refinery.tokens.loader` does), micro-batch k of that rank
the k-th run of micro_batch_size. ``step`` is stored for the materialized geometry;
:func:`step_of` recomputes it for another.

Row groups of ``ROW_GROUP`` rows carry min/max statistics, so a lookup by step or sequence reads
one row group of the file (see the benchmark: milliseconds at 10M sequences).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from refinery import markdown
from refinery.storage import replace_partition, stamped
from refinery.tempfiles import fsync_file, temp_path

ROW_GROUP = 65_536
SCHEMA = pa.schema(
    [
        pa.field("split", pa.string()),
        pa.field("sequence", pa.int64()),
        pa.field("step", pa.int64()),
        pa.field("offset", pa.int32()),
        pa.field("length", pa.int32()),
        pa.field("domain", pa.string()),
        pa.field("source", pa.string()),
        pa.field("id", pa.string()),
        pa.field("position", pa.int64()),
        pa.field("epoch", pa.int32()),
        pa.field("doc_start", pa.int64()),
        pa.field("doc_tokens", pa.int64()),
    ]
)


def empty() -> pa.Table:
    return SCHEMA.empty_table()


def finish(pieces: list[pa.Table], split: str, sequences_per_step: int) -> pa.Table:
    """One split's pieces in the table's schema, with ``split`` and ``step``."""
    if not pieces:
        return empty()
    table = pa.concat_tables(pieces)
    seq = table.column("sequence").to_numpy()
    table = table.append_column("split", pa.array([split] * table.num_rows, pa.string()))
    table = table.append_column("step", pa.array(seq // sequences_per_step, pa.int64()))
    return table.select(SCHEMA.names).cast(SCHEMA)


def sequence_domains(table: pa.Table, sequences: int) -> tuple[list[str], np.ndarray]:
    """(domain names, each sequence's domain code): the domain that holds most of its tokens
    (ties: the first name). The adaptive stream (:mod:`refinery.tokens.adaptive`) weights
    sequences by it."""
    if not table.num_rows:
        return [], np.zeros(sequences, np.int16)
    names = sorted(set(table.column("domain").to_pylist()))
    code = {n: i for i, n in enumerate(names)}
    domain = np.array([code[d] for d in table.column("domain").to_pylist()], np.int64)
    seq = table.column("sequence").to_numpy()
    weight = np.zeros((sequences, len(names)), np.int64) if sequences * len(names) <= 50_000_000 else None
    if weight is not None:
        np.add.at(weight, (seq, domain), table.column("length").to_numpy())
        return names, weight.argmax(axis=1).astype(np.int16)
    frame = pd.DataFrame({"s": seq, "d": domain, "n": table.column("length").to_numpy()})
    sums = (
        frame.groupby(["s", "d"], sort=True)["n"]
        .sum()
        .reset_index()
        .sort_values(["s", "n", "d"], ascending=[True, False, True])
    )
    best = sums.drop_duplicates("s")
    out = np.zeros(sequences, np.int16)
    out[best["s"].to_numpy()] = best["d"].to_numpy()
    return names, out


def write(path: Path, table: pa.Table, provenance: dict) -> Path:
    """The table, atomically, in row groups of ``ROW_GROUP`` rows, stamped with what made it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = temp_path(path)
    try:
        pq.write_table(
            table.replace_schema_metadata(stamped(table.schema, provenance).metadata),
            temp,
            row_group_size=ROW_GROUP,
            compression="zstd",
        )
        fsync_file(temp)
        replace_partition(temp, path, path.with_suffix(""))
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return path


def step_of(
    sequence: np.ndarray, micro_batch_size: int, ranks: int, grad_accumulation: int
) -> dict[str, np.ndarray]:
    """Step, rank and micro-batch of each sequence under a batch geometry."""
    g = micro_batch_size * ranks * grad_accumulation
    sequence = np.asarray(sequence, dtype=np.int64)
    within = sequence % g
    per_rank = g // ranks
    return {
        "step": sequence // g,
        "rank": within // per_rank,
        "micro_batch": (within % per_rank) // micro_batch_size,
    }


def read_step(path: Path, split: str, first: int, last: int) -> pa.Table:
    """Pieces of sequences first…last (inclusive) of a split: row groups chosen by statistics."""
    return pq.read_table(
        path,
        filters=[("split", "=", split), ("sequence", ">=", first), ("sequence", "<=", last)],
    )


def sample_step(table: pa.Table, step: int) -> str:
    """A Markdown table of one step's documents (the Dagster UI's sample of the lineage)."""
    if not table.num_rows:
        return "_no sequences_"
    mask = pc.and_(
        pc.equal(table.column("step"), step), pc.equal(table.column("split"), table.column("split")[0])
    )
    part = table.filter(mask).slice(0, 20).to_pylist()
    rows = [
        (r["sequence"], r["offset"], r["length"], r["source"], r["id"], r["doc_start"], r["doc_tokens"])
        for r in part
    ]
    return markdown.table(["sequence", "offset", "length", "source", "id", "doc_start", "doc_tokens"], rows)
