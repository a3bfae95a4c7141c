"""Splits: deterministic by hash, in the asked proportions, with every near-duplicate group in one
split; the leakage check catches near copies across splits when grouping is skipped."""

import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import refinery.schedule.splits as splits_module
from refinery.dedup.minhash import MinHasher
from refinery.sample import prose
from refinery.schedule.splits import SplitParams, UnionFind, assign_splits, near_duplicate_pairs, split_of
from refinery.storage import Storage


def write(storage: Storage, asset: str, source: str, rows: list[dict], rejected: bool = False) -> None:
    path = storage.rejected_path(asset, source) if rejected else storage.path(asset, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def trimmed(text: str) -> str:
    """The article without its last two paragraphs: Jaccard 0.5–0.9, mostly under the dedup's 0.8."""
    return "\n\n".join(text.split("\n\n")[:-2])


@pytest.fixture
def corpus(tmp_path):
    """Source a: 150 articles; source b: 50 near copies (Jaccard ≈ 0.65) of a's first 50, plus an
    exact-dedup decision and a hash collision."""
    storage = Storage(tmp_path / "storage")
    rng = random.Random(4)
    a = [
        {"id": f"a{i}", "text": prose.article(rng, paragraphs=6), "content_hash": f"h{i}"} for i in range(150)
    ]
    b = [{"id": f"b{i}", "text": trimmed(a[i]["text"]), "content_hash": f"hb{i}"} for i in range(50)]
    b.append({"id": "same-hash", "text": prose.article(rng, paragraphs=3), "content_hash": "h149"})
    write(storage, "pretrain_corpus", "a", a)
    write(storage, "pretrain_corpus", "b", b)
    write(storage, "exact_deduplicated", "b", [{"id": "x"}])
    write(storage, "exact_deduplicated", "b", [{"id": "gone", "duplicate_of": "a/a77"}], rejected=True)
    return storage


def test_groups_stay_together_and_the_check_passes(corpus):
    result = assign_splits(corpus, SplitParams())
    df = result.assignment.set_index(result.assignment["source"] + "/" + result.assignment["id"])
    for i in range(50):
        assert df.loc[f"a/a{i}", "split"] == df.loc[f"b/b{i}", "split"]
        assert df.loc[f"a/a{i}", "group"] == df.loc[f"b/b{i}", "group"] == f"a/a{i}"
    assert df.loc["b/same-hash", "group"] == df.loc["a/a149", "group"]
    assert df.loc["a/a77", "group_size"] == 1  # the rejected copy is not a corpus document
    assert result.edges["dedup_decisions"] == 1 and result.edges["same_content_hash"] == 1
    assert result.edges["near_duplicates"] >= 50
    assert result.crossing_edges == 0 and result.leakage_found == 0 and result.leakage_checked > 0
    assert len(result.assignment) == 201


def test_leakage_check_catches_what_grouping_missed(corpus, monkeypatch):
    monkeypatch.setattr(splits_module, "near_duplicate_pairs", lambda *a, **k: [])
    result = assign_splits(corpus, SplitParams(leakage_sample=1000))
    assert result.leakage_found > 0 and result.leak_examples  # near copies now straddle splits
    a, b, sim = result.leak_examples[0]
    assert sim >= 0.5 and {a.split("/")[0], b.split("/")[0]} == {"a", "b"}


def test_split_of_is_deterministic_and_proportional():
    fractions = {"train": 0.8, "validation": 0.1, "test": 0.1}
    keys = [f"s/doc-{i}" for i in range(20_000)]
    got = [split_of(k, "salt", fractions) for k in keys]
    assert got == [split_of(k, "salt", fractions) for k in keys]
    for name, share in fractions.items():
        assert got.count(name) / len(keys) == pytest.approx(share, abs=0.01)
    other = [split_of(k, "other-salt", fractions) for k in keys[:1000]]
    assert other != got[:1000]
    with pytest.raises(ValueError):
        SplitParams(fractions={"train": 0.5, "test": 0.4})


def test_union_find_and_near_pairs():
    uf = UnionFind(6)
    for a, b in [(0, 1), (2, 3), (1, 3), (4, 4)]:
        uf.union(a, b)
    roots = uf.roots()
    assert len({roots[i] for i in (0, 1, 2, 3)}) == 1 and roots[4] != roots[5]
    rng = random.Random(9)
    base = [prose.article(rng, paragraphs=5) for _ in range(20)]
    sigs = MinHasher(64, 5, 1).signatures([*base, trimmed(base[3])])
    pairs = near_duplicate_pairs(sigs, 0.5, 64)
    assert [(i, j) for i, j, _ in pairs] == [(3, 20)]
    assert near_duplicate_pairs(np.zeros((1, 64), np.uint32), 0.5, 64) == []


def test_dedup_group_whose_kept_copy_left_the_corpus(corpus):
    """A later stage removed the kept copy: the group has no corpus document but still gets a split."""
    write(
        corpus,
        "fuzzy_deduplicated",
        "b",
        [{"id": "copy", "duplicate_of": "a/removed-by-quality"}],
        rejected=True,
    )
    result = assign_splits(corpus, SplitParams())
    assert result.crossing_edges == 0 and len(result.assignment) == 201
