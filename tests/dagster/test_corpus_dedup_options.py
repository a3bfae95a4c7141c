"""Every option of ``corpus_fuzzy_dedup``, through Dagster's ``materialize``, on the scenario corpus
of tests/dagster/corpus_dedup_scenario.py (cross-partition copies, one-word edits, a chain
A ~ B ~ C). One materialization with every option off its default; the defaults' own behaviour is
tests/dagster/test_corpus_fuzzy_dedup.py's."""

from __future__ import annotations

import itertools
import re

import dagster as dg
import numpy as np

from assets import corpus_fuzzy_dedup
from refinery import names
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.dagster.corpus_dedup_scenario import corpus, materialize_corpus

CORPUS_DEDUP = {
    "batch_rows": 3,
    "num_perm": 64,
    "ngram": 3,
    "threshold": 0.7,
    "seed": 5,
    "recall": 0.97,
    "max_bucket_all_pairs": 2,
    "anchors": 1,
    "replay_incremental": False,
    "examples": 1,
}
OPTIONS = {"corpus_fuzzy_dedup": [CORPUS_DEDUP]}


def test_corpus_fuzzy_dedup_options(home, instance):
    sources = materialize_corpus(instance, home, corpus())
    result = dg.materialize(
        [corpus_fuzzy_dedup],
        instance=instance,
        resources=resources_for(home),
        run_config={"ops": {"corpus_fuzzy_dedup": {"config": CORPUS_DEDUP}}},
    )
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    meta = {
        k: getattr(v, "value", v)
        for k, v in result.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0].metadata.items()
    }
    assert meta["parameters"] == CORPUS_DEDUP
    assert meta["manifest"]["provenance"]["params"] == CORPUS_DEDUP
    # num_perm, threshold, recall: the banding is chosen for 64 permutations at 0.7, P ≥ 0.97
    row = next(line for line in meta["lsh_bands"].splitlines() if re.match(r"\| \d", line))
    bands, rows, perms, threshold, p = (float(c) for c in row.strip("| ").split(" | "))
    assert (perms, threshold) == (64, 0.7) and bands * rows <= 64 and p >= 0.97
    # max_bucket_all_pairs 2 and anchors 1: most shared buckets are "large" now (the default: none)
    assert meta["large_buckets"] > 0
    # replay_incremental off: no replay of the incremental path
    assert "removed_by_incremental_replay" not in meta and "incremental_replay" not in meta["peak_memory_mb"]
    assert meta["incremental_replay"] == "skipped (replay_incremental false)"
    # examples 1: one example per difference
    assert len([r for r in meta["only_batch_examples"].splitlines() if "/" in r]) <= 1
    # ngram 3, seed 5, threshold 0.7: no two kept documents reach 0.7 under that hasher, and every
    # removed document reaches it with some document of its component
    storage = Storage(home.storage)
    table = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    texts = {}
    for source in sources:
        frame = storage.read(names.EXACT_DEDUPLICATED, source)
        texts.update(zip(source + "/" + frame["id"], frame["text"], strict=True))
    keys = (table["source"] + "/" + table["id"]).tolist()
    hasher = MinHasher(64, 3, 5)
    signatures = dict(zip(keys, hasher.signatures([texts[k] for k in keys]), strict=True))
    kept = [k for k, keep in zip(keys, table["kept"], strict=True) if keep]
    assert all(jaccard(signatures[a], signatures[b]) < 0.7 for a, b in itertools.combinations(kept, 2))
    removed = table[~table["kept"]]
    assert len(removed) > 0 and (removed["similarity"] >= 0.7 - 1e-9).all()
    for _, members in table.groupby("component"):
        member_keys = [keys[i] for i in members.index]
        for doc in member_keys[1:]:
            assert max(jaccard(signatures[doc], signatures[o]) for o in member_keys if o != doc) >= 0.7
    assert np.isfinite(removed["similarity"]).all()
