"""The batch dedup asset's library, without Dagster or a cluster: the Ray grouping's per-shard
function and driver side give the local engine's pairs and counts, and the checks catch a broken
table."""

from __future__ import annotations

import random

import numpy as np
import pandas as pd
import pytest

from refinery.dedup.corpus_dedup import CorpusDedupParams, PairStats, band_rows, corpus_dedup
from refinery.dedup.corpus_publish import check_outcomes
from refinery.dedup.grouping import collect_shard_pairs, group_pairs, shard_pairs
from refinery.dedup.minhash import MinHasher
from refinery.engine.local import LocalEngine
from refinery.sample import prose


def _texts(seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    base = [prose.article(rng, paragraphs=3) for _ in range(6)]
    texts = list(base)
    texts += [prose.near_duplicate(t, rng, edits=1) for t in base[:4]]
    texts += [base[0]] * 7  # one bucket larger than max_bucket_all_pairs below, in every band
    return texts


@pytest.mark.parametrize(("max_bucket_all_pairs", "shards"), [(3, 1), (3, 4), (64, 3)])
def test_grouping_by_shard_as_ray_does_gives_the_local_engines_pairs_and_counts(max_bucket_all_pairs, shards):
    params = CorpusDedupParams()
    index = params.index_params()
    signatures = MinHasher(params.num_perm, params.ngram, params.seed).signatures(_texts())
    bands, rows = index["bands"], index["rows"]
    want_pairs, want_stats = group_pairs(LocalEngine(), signatures, bands, rows, max_bucket_all_pairs, 2)

    table = pd.concat([band_rows(signatures, bands, rows, only_band=b) for b in range(bands)])
    table["shard"] = np.mod(table["bucket"].to_numpy(), shards)
    outputs = [  # what map_groups hands each call: one shard, whole buckets of several bands
        shard_pairs(g.reset_index(drop=True), max_bucket_all_pairs, 2) for _, g in table.groupby("shard")
    ]
    assert len(outputs) == shards
    found = pd.concat(outputs, ignore_index=True)
    pairs, stats = collect_shard_pairs(found, PairStats(band_rows=len(table)))

    pd.testing.assert_frame_equal(pairs, want_pairs)
    assert stats == want_stats
    assert stats.large_buckets == (bands if max_bucket_all_pairs == 3 else 0)


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
