"""The whole corpus as the cross-source stages see it: every partition, with a domain per row.

The mixing and scheduling stages are not partitioned: they decide across sources. They read
every partition of ``pretrain_corpus`` from storage in batches (never one table in memory),
and name each document ``<source>/<id>`` and its row in the source's file, so a later stage
can find it again without a join on text. Their own outputs are single Parquet files, written
under a temporary name and renamed into place, like every partition file
(:meth:`refinery.storage.Storage.write_table`).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from refinery.fs import iter_parquet_batches
from refinery.names import PRETRAIN_CORPUS
from refinery.stats import whitespace_tokens
from refinery.storage import Storage


@dataclass
class CorpusBatch:
    source: str
    frame: pd.DataFrame  # id, text (if asked), domain, row, tokens, and any extra columns asked for
    first_row: int


def corpus_sources(storage: Storage, asset: str = PRETRAIN_CORPUS) -> list[str]:
    return storage.partitions(asset)


def iter_corpus(
    storage: Storage,
    columns: list[str] | None = None,
    domain_column: str | None = None,
    with_text: bool = True,
    batch_rows: int = 5_000,
    asset: str = PRETRAIN_CORPUS,
    sources: list[str] | None = None,
) -> Iterator[CorpusBatch]:
    """Every document of every source, in batches, with ``domain``, ``row`` and ``tokens``.

    ``domain`` is ``domain_column``'s value where the corpus has that column and it is set,
    else the source. ``columns`` that a source lacks come back as nulls.
    """
    for source in sources if sources is not None else corpus_sources(storage, asset):
        storage.require(asset, source)
        files = [str(f) for f in storage.files(asset, source)]
        names = set(storage.schema(asset, source).names)
        wanted = ["id", "text"] + [c for c in (columns or []) if c in names and c not in ("id", "text")]
        if domain_column and domain_column in names and domain_column not in wanted:
            wanted.append(domain_column)
        row = 0
        for batch in iter_parquet_batches(storage.fs, files, batch_rows, wanted):
            tokens = whitespace_tokens(batch.column("text"))
            frame = batch.to_pandas()
            domain = pd.Series(source, index=frame.index, dtype=object)
            if domain_column and domain_column in frame.columns:
                given = frame[domain_column].astype(object)
                domain = given.where(given.notna() & (given.astype(str).str.len() > 0), source).astype(str)
            frame = frame.assign(domain=domain, row=np.arange(row, row + len(frame)), tokens=tokens)
            for col in columns or []:
                if col not in frame.columns:
                    frame[col] = None
            if not with_text:
                frame = frame.drop(columns=["text"])
            yield CorpusBatch(source, frame, row)
            row += len(frame)
