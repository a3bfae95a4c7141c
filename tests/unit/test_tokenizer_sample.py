"""The tokenizer's sample is drawn from row counts and read a batch at a time: the same rows, in the
same order, as drawing over each source's whole partition in memory (what it did before), without
holding a source's text."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.names import PRETRAIN_CORPUS
from refinery.storage import Storage
from refinery.tokens.tokenizer import TokenizerError, TokenizerParams, sample_corpus


def _in_memory(storage: Storage, params: TokenizerParams) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The sampling as it was: every source read whole, then permuted."""
    sources = storage.partitions(PRETRAIN_CORPUS)
    counts = {s: storage.row_count(PRETRAIN_CORPUS, s) for s in sources}
    total = max(sum(counts.values()), 1)
    rng = np.random.default_rng(params.seed)
    train, held = [], []
    for source in sources:
        frame = storage.read(PRETRAIN_CORPUS, source, columns=["source", "id", "text"])
        order = rng.permutation(len(frame))
        n = min(params.held_out_per_source, len(frame) // 2)
        share = max(1, round(params.sample_documents * counts[source] / total)) if len(frame) else 0
        held.append(frame.iloc[order[:n]])
        train.append(frame.iloc[order[n : n + share]])
    return pd.concat(train, ignore_index=True), pd.concat(held, ignore_index=True)


def _source(storage: Storage, source: str, rows: int, parts: int) -> None:
    ids = [f"{source}-{i}" for i in range(rows)]
    table = pa.table({"source": [source] * rows, "id": ids, "text": [f"text of {i}" for i in ids]})
    if parts == 1:
        path = storage.path(PRETRAIN_CORPUS, source)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=7)
        return
    folder = storage.parts_path(PRETRAIN_CORPUS, source)
    folder.mkdir(parents=True)
    for k, chunk in enumerate(np.array_split(np.arange(rows), parts)):
        pq.write_table(table.take(chunk), folder / f"part-{k:05d}.parquet")


@pytest.mark.parametrize("sample", [5, 40, 10_000])
def test_streamed_sample_equals_the_in_memory_draw(tmp_path, sample):
    storage = Storage(tmp_path)
    _source(storage, "a", 57, 1)
    _source(storage, "b", 120, 4)
    _source(storage, "c", 0, 1)
    params = TokenizerParams(sample_documents=sample, held_out_per_source=9, seed=4)
    got, want = sample_corpus(storage, params), _in_memory(storage, params)
    for g, w in zip(got, want, strict=True):
        pd.testing.assert_frame_equal(g, w)
    assert len(got[1]) == 18 and got[0]["id"].is_unique


def test_a_partition_shorter_than_its_count_is_an_error(tmp_path, monkeypatch):
    storage = Storage(tmp_path)
    _source(storage, "a", 30, 2)
    monkeypatch.setattr(Storage, "row_count", lambda self, asset, source, rejected=False: 40)
    with pytest.raises(TokenizerError, match="30 rows where its count said more"):
        sample_corpus(storage, TokenizerParams(sample_documents=100, held_out_per_source=2))
