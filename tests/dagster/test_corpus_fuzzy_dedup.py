"""corpus_fuzzy_dedup through Dagster on the real text chain: four partitions (three through
fuzzy_deduplicated, one only through exact_deduplicated) with cross-partition exact copies,
one-word edits and a chain A ~ B ~ C, then the batch asset over every partition with real resources.

Checked from the files: every document of exact_deduplicated appears once; each component keeps its
first document in (source, row) order and the others name it; no two kept documents reach the
threshold; the batch removals contain the incremental ones (and the chain's end C is removed only by
batch); the side-by-side metadata equals counts computed here from both stages' tables.
"""

from __future__ import annotations

import itertools

import dagster as dg
import numpy as np
import pandas as pd

from assets import corpus_fuzzy_dedup
from refinery import names
from refinery.dedup.corpus_publish import CorpusFuzzyDedupParams
from refinery.dedup.minhash import MinHasher, jaccard
from refinery.manifest import read_manifest
from refinery.storage import Storage
from tests.dagster.conftest import resources_for
from tests.dagster.corpus_dedup_scenario import corpus, materialize_corpus

PARAMS = CorpusFuzzyDedupParams()


def _key(frame: pd.DataFrame) -> list[str]:
    return (frame["source"].astype(str) + "/" + frame["id"].astype(str)).tolist()


def _read_all(storage: Storage, asset: str, sources: list[str], rejected: bool = False) -> pd.DataFrame:
    return pd.concat(
        [storage.read(asset, s, rejected=rejected).assign(source=s) for s in sources], ignore_index=True
    )


def test_batch_dedup_over_every_partition_beside_the_incremental_path(home, instance):
    sources = materialize_corpus(instance, home, corpus())
    compared = [s for s in sources if s != "zlate"]
    storage = Storage(home.storage)
    entering = _read_all(storage, names.EXACT_DEDUPLICATED, sources)
    hasher = MinHasher(PARAMS.num_perm, PARAMS.ngram, PARAMS.seed)
    texts = dict(zip(_key(entering), entering["text"], strict=True))
    a, b, c = hasher.signatures([texts["part0/chainA"], texts["part1/chainB"], texts["part2/chainC"]])
    assert jaccard(a, b) >= PARAMS.threshold and jaccard(b, c) >= PARAMS.threshold > jaccard(a, c)

    result = dg.materialize([corpus_fuzzy_dedup], instance=instance, resources=resources_for(home))
    assert result.success
    checks = {c.check_name: c for c in result.get_asset_check_evaluations()}
    assert set(checks) == {"every_document_once", "one_kept_per_component"}
    assert all(c.passed for c in checks.values())
    meta = {k: getattr(v, "value", v) for k, v in result.asset_materializations_for_node(
        names.CORPUS_FUZZY_DEDUP)[0].metadata.items()}  # fmt: skip

    table = storage.read(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    assert list(table.columns) == ["source", "id", "component", "component_size", "kept", "duplicate_of",
                                   "similarity"]  # fmt: skip
    # Every document once, in first-come order (sources sorted, rows in reading order).
    assert _key(table) == _key(entering)
    # One kept per component: its first document; every other member names it.
    keys = np.asarray(_key(table), dtype=object)
    for component, members in table.groupby("component"):
        assert members.index[0] == component
        assert members["kept"].tolist() == [True] + [False] * (len(members) - 1)
        assert (members["duplicate_of"].iloc[1:] == keys[component]).all()
        assert (members["component_size"] == len(members)).all()
    # No two kept documents are near-duplicates.
    kept = table[table["kept"]]
    signatures = hasher.signatures([texts[k] for k in _key(kept)])
    close = [(i, j) for i, j in itertools.combinations(range(len(kept)), 2)
             if jaccard(signatures[i], signatures[j]) >= PARAMS.threshold]  # fmt: skip
    assert close == []

    # Beside the incremental path, over the sources fuzzy_deduplicated has materialized.
    fuzzy_out = _read_all(storage, names.FUZZY_DEDUPLICATED, compared, rejected=True)
    incremental = set(_key(fuzzy_out[fuzzy_out["reason"] == "near_duplicate"]))
    in_compared = table[table["source"].isin(compared)]
    batch = set(_key(in_compared[~in_compared["kept"]]))
    assert incremental and incremental <= batch
    assert "part2/chainC" in batch - incremental  # the chain: C reaches A only through B
    assert "part1/chainB" in batch & incremental
    assert (meta["removed_by_batch"], meta["removed_by_incremental"]) == (len(batch), len(incremental))
    assert meta["removed_by_both"] == len(batch & incremental)
    assert (meta["only_batch"], meta["only_incremental"]) == (len(batch - incremental), 0)
    assert meta["only_batch_chained"] >= 1 and "part2/chainC" in meta["only_batch_examples"]
    assert "zlate" in meta["incremental_missing_partitions"] and meta["incremental_sources_compared"] == 3
    # The headline counts, from the table.
    sizes = kept["component_size"]
    assert meta["documents_in"] == len(entering) == len(table)
    assert (meta["kept"], meta["removed"]) == (len(kept), len(table) - len(kept))
    assert meta["components_with_duplicates"] == int((sizes > 1).sum()) >= 4
    assert meta["largest_component"] == int(sizes.max())
    assert meta["verified_edges"] >= meta["removed"] and meta["candidate_pairs"] >= meta["verified_edges"]
    assert meta["signatures_computed_by"] == meta["pairs_grouped_by"] == "local"
    assert set(meta["seconds"]) >= {"signatures", "bands_and_pairs", "edges_components_table",
                                    "incremental_replay"}  # fmt: skip
    assert set(meta["peak_memory_mb"]) == {"signatures", "bands_and_pairs", "edges_components_table",
                                           "incremental_replay"}  # fmt: skip
    # Replayed in sorted order on the same documents, the incremental path removes what the stage did
    # (zlate's edit included: the replay reads every source).
    assert meta["removed_by_incremental_replay"] == len(incremental) + 1
    assert meta["incremental_replay"] == "replayed in this step"  # the default, on the local engine
    assert "part2/chainC" in meta["removed_sample"] or meta["removed"] > 10
    # The parts folder's manifest, written last: its hash is the materialization's data version.
    folder = storage.require(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    manifest = read_manifest(folder)
    assert manifest["rows"] == len(table) and [p["name"] for p in manifest["parts"]] == [
        f.name for f in storage.files(names.CORPUS_FUZZY_DEDUP, names.CORPUS_FUZZY_DEDUP)
    ]
    event = result.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    assert event.tags["dagster/data_version"] == manifest["version"] == meta["manifest"]["version"]
    again = dg.materialize([corpus_fuzzy_dedup], instance=instance, resources=resources_for(home))
    event = again.asset_materializations_for_node(names.CORPUS_FUZZY_DEDUP)[0]
    assert event.tags["dagster/data_version"] == manifest["version"]  # same rows: same version
    assert not (home.storage / "_shuffle").exists() or not any((home.storage / "_shuffle").rglob("*.parquet"))
