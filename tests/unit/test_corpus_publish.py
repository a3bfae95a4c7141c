"""The batch dedup asset's library, without Dagster or a cluster: the in-memory baseline decides as
the one-pass function, and the checks catch a broken table."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd

from refinery.dedup.corpus_compare import Meter
from refinery.dedup.corpus_dedup import CorpusDedupParams, corpus_dedup
from refinery.dedup.corpus_publish import batch_dedup, check_outcomes
from refinery.names import EXACT_DEDUPLICATED
from refinery.sample import prose
from refinery.schema import DOCUMENT_SCHEMA
from refinery.storage import Storage


def _texts(seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    base = [prose.article(rng, paragraphs=3) for _ in range(6)]
    texts = list(base)
    texts += [prose.near_duplicate(t, rng, edits=1) for t in base[:4]]
    texts += [base[0]] * 7  # one bucket larger than max_bucket_all_pairs below, in every band
    return texts


def test_the_in_memory_baseline_reads_storage_and_decides_as_corpus_dedup(tmp_path):
    """batch_dedup (the baseline beside the shuffles) over two stored partitions, in batches of 4
    rows: the table corpus_dedup gives over the same frames in one pass."""
    texts = _texts()
    frames = [
        (source, pd.DataFrame({"id": [f"d{i}" for i in range(len(part))], "text": part}))
        for source, part in (("a", texts[:9]), ("b", texts[9:]))
    ]
    storage = Storage(tmp_path / "storage")
    for source, frame in frames:
        with storage.writer(EXACT_DEDUPLICATED, source, DOCUMENT_SCHEMA, DOCUMENT_SCHEMA, {}) as writer:
            writer.write(frame.assign(source=source, url=None, meta=None, file="f", line=1), None)
    params = CorpusDedupParams(batch_rows=4)
    meter = Meter()

    got = batch_dedup(storage, ["a", "b"], params, meter)
    want = corpus_dedup(frames, params)

    pd.testing.assert_frame_equal(got.table, want.table)
    assert got.stats["removed"] == want.stats["removed"] > 0
    assert got.stats["candidate_pairs"] == want.stats["candidate_pairs"]
    assert set(meter.seconds) == {"signatures", "bands_and_pairs", "edges_components_table"}


def test_checks_pass_on_the_batch_table_and_catch_a_broken_one():
    texts = _texts()
    frames = [("a", pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts}))]
    table = corpus_dedup(frames, CorpusDedupParams()).table
    assert [c.passed for c in check_outcomes(table, len(table))] == [True, True]

    wrong_owner = table.copy()
    removed = np.flatnonzero(~wrong_owner["kept"].to_numpy())
    wrong_owner.loc[removed[0], "duplicate_of"] = "a/nobody"
    two_kept = table.copy()
    two_kept.loc[removed[0], "kept"] = True
    repeated = pd.concat([table, table.head(1)], ignore_index=True)
    assert [c.passed for c in check_outcomes(wrong_owner, len(table))] == [True, False]
    assert [c.passed for c in check_outcomes(two_kept, len(table))] == [True, False]
    assert not check_outcomes(repeated, len(repeated))[0].passed
    assert not check_outcomes(table, len(table) + 1)[0].passed
