"""The claiming() context managers: commit, abort, re-materialization, kills, and stored formats."""

import json
import multiprocessing
import os
import random
import signal
import sqlite3

import pandas as pd
import pytest
import redis

from refinery.dedup.backends import local_index_path, open_exact_index, open_fuzzy_index, reset_indexes
from refinery.dedup.errors import IndexFormatError
from refinery.dedup.exact import ExactDeduper, ExactDedupParams, content_hash
from refinery.dedup.fuzzy import FuzzyDeduper, FuzzyDedupParams
from refinery.paths import Layout
from refinery.sample import prose
from refinery.sft.check import SftChecker, SftCheckParams
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.rules import SftRules
from refinery.sft.schema import KEY_COLUMN, SFT_SCHEMA

rng = random.Random(8)
ARTICLES = [prose.article(rng, paragraphs=4) for _ in range(8)]
PARAMS = FuzzyDedupParams()


def frame(ids, texts):
    return pd.DataFrame({"id": ids, "text": texts})


def exact(kind, home, url):
    return open_exact_index(kind, home, url, "t")


def fuzzy(kind, home, url):
    return open_fuzzy_index(kind, home, url, "t", PARAMS.index_params())


def run(kind, home, url, stage, source, ids, texts):
    """One partition through one stage; returns (result, the finished run)."""
    index = exact(kind, home, url) if stage == "exact" else fuzzy(kind, home, url)
    with index.claiming(source) as claims:
        deduper = ExactDeduper(claims, ExactDedupParams()) if stage == "exact" else FuzzyDeduper(claims)
        result = deduper(frame(ids, texts))
    return result, claims


@pytest.fixture(params=["local", "redis", "redis-cluster"])
def backend(request):
    if request.param == "redis":
        return "redis", request.getfixturevalue("redis_clean")
    if request.param == "redis-cluster":
        return "redis-cluster", request.getfixturevalue("redis_cluster_clean")
    return "local", ""


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_commit_reports_size_and_nothing_withdrawn(home, backend, stage):
    kind, url = backend
    result, claims = run(kind, home, url, stage, "a", ["1", "2"], ARTICLES[:2])
    assert claims.committed and claims.withdrawn == [] and claims.replaced == 0 and claims.size == 2
    assert result.kept["id"].tolist() == ["1", "2"]


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_exception_aborts_the_runs_claims_and_keeps_the_others(home, backend, stage):
    kind, url = backend
    run(kind, home, url, stage, "other", ["o"], ARTICLES[5:6])
    index = exact(kind, home, url) if stage == "exact" else fuzzy(kind, home, url)
    with pytest.raises(RuntimeError, match="boom"), index.claiming("a") as claims:
        deduper = ExactDeduper(claims, ExactDedupParams()) if stage == "exact" else FuzzyDeduper(claims)
        assert len(deduper(frame(["1", "2"], ARTICLES[:2])).kept) == 2
        raise RuntimeError("boom")
    assert not claims.committed
    if kind == "local":
        with pytest.raises(sqlite3.ProgrammingError):  # the context manager closed the connection
            index.count()
    again = exact(kind, home, url) if stage == "exact" else fuzzy(kind, home, url)
    assert again.count() == 1  # only the other partition's claim is left
    again.close()
    result, claims = run(kind, home, url, stage, "b", ["x"], ARTICLES[:1])
    assert result.kept["id"].tolist() == ["x"]  # a/1 was withdrawn, so b's copy is the first now
    assert claims.replaced == 0


@pytest.mark.parametrize("stage", ["exact", "fuzzy"])
def test_rematerialization_withdraws_renews_and_reports(home, backend, stage):
    kind, url = backend
    texts = ARTICLES[:3]
    run(kind, home, url, stage, "a", ["1", "2", "3"], texts)
    dup, _ = run(kind, home, url, stage, "b", ["9"], [ARTICLES[1]])
    assert dup.rejected["duplicate_of"].tolist() == ["a/2"]
    # Unchanged input: identical decisions, every claim renewed.
    same, claims = run(kind, home, url, stage, "a", ["1", "2", "3"], texts)
    assert same.kept["id"].tolist() == ["1", "2", "3"] and claims.withdrawn == [] and claims.replaced == 3
    # a/2 leaves and a/3 changes content under the same id: both claims are withdrawn, not renewed.
    _, claims = run(kind, home, url, stage, "a", ["1", "3"], [ARTICLES[0], ARTICLES[6]])
    assert claims.withdrawn == ["a/2", "a/3"] and claims.size == 2  # a/1 and the new a/3; b/9 was a duplicate
    rerun_b, _ = run(kind, home, url, stage, "b", ["9"], [ARTICLES[1]])
    assert rerun_b.kept["id"].tolist() == ["9"]


def test_unchanged_input_gives_identical_claims(home, backend):
    kind, url = backend
    ids, texts = ["1", "2", "3", "4"], [ARTICLES[0], ARTICLES[1], ARTICLES[0], ARTICLES[2]]
    hashes = [content_hash(t, "simplified") for t in ARTICLES[:3]]
    first, _ = run(kind, home, url, "exact", "a", ids, texts)
    index = exact(kind, home, url)
    before = index.lookup(hashes)
    index.close()
    second, claims = run(kind, home, url, "exact", "a", ids, texts)
    index = exact(kind, home, url)
    assert (
        index.lookup(hashes) == before == {h: f"a/{i}" for h, i in zip(hashes, ["1", "2", "4"], strict=True)}
    )
    index.close()
    assert first.rejected.equals(second.rejected) and first.kept.equals(second.kept)
    assert claims.withdrawn == []


def _claim_then_die(kind: str, home: str, url: str) -> None:
    """Claim two batches of partition 'a' (committed), then die by SIGKILL inside the with block."""
    index = open_fuzzy_index(kind, Layout.at(home), url, "t", PARAMS.index_params())
    with index.claiming("a") as claims:
        deduper = FuzzyDeduper(claims)
        deduper(frame(["1", "2"], ARTICLES[:2]))
        deduper(frame(["3"], ARTICLES[2:3]))
        os.kill(os.getpid(), signal.SIGKILL)


def test_a_killed_run_leaves_committed_batches_until_its_partition_runs_again(home, backend):
    kind, url = backend
    proc = multiprocessing.get_context("spawn").Process(
        target=_claim_then_die, args=(kind, str(home.home), url)
    )
    proc.start()
    proc.join(120)
    assert proc.exitcode == -signal.SIGKILL
    index = fuzzy(kind, home, url)
    assert index.count() == 3  # the batches it committed stay...
    index.close()
    dup, _ = run(kind, home, url, "fuzzy", "b", ["x"], [ARTICLES[2]])
    assert dup.rejected["duplicate_of"].tolist() == ["a/3"]  # ...and count, until...
    _, claims = run(kind, home, url, "fuzzy", "a", ["1"], ARTICLES[:1])
    assert claims.replaced == 3 and claims.withdrawn == ["a/2", "a/3"]  # ...a's next run withdraws them


def test_local_format_1_fuzzy_index_is_refused_until_reset(home):
    legacy = local_index_path(home, "fuzzy").with_suffix(".pickle")
    legacy.parent.mkdir(parents=True, exist_ok=True)
    legacy.write_bytes(b"old datasketch pickle")
    with pytest.raises(IndexFormatError, match=r"older format .*refinery index reset fuzzy"):
        fuzzy("local", home, "")
    removed = reset_indexes("local", home, "", "t", "fuzzy")
    assert str(legacy) in removed
    fuzzy("local", home, "").close()


def test_stored_format_is_checked_on_open(home):
    fuzzy("local", home, "").close()
    db = sqlite3.connect(local_index_path(home, "fuzzy"))
    stored = {**PARAMS.index_params(), "format": 1}
    db.execute("UPDATE meta SET value = ? WHERE name = 'params'", (json.dumps(stored),))
    db.commit()
    db.close()
    with pytest.raises(IndexFormatError, match="format 1"):
        fuzzy("local", home, "")


def test_redis_format_1_keys_are_refused_until_reset(home, redis_clean):
    client = redis.Redis.from_url(redis_clean)
    client.set("t:fuzzy:params", json.dumps({"format": 1}))  # what the datasketch layout wrote
    client.hset("t:exact:claims", b"h", b"a/1")
    with pytest.raises(IndexFormatError, match="refinery index reset fuzzy"):
        fuzzy("redis", home, redis_clean)
    with pytest.raises(IndexFormatError, match="refinery index reset exact"):
        exact("redis", home, redis_clean)
    removed = reset_indexes("redis", home, redis_clean, "t", "all")
    assert {"t:fuzzy:params", "t:exact:claims"} <= set(removed)
    run("redis", home, redis_clean, "fuzzy", "a", ["1"], ARTICLES[:1])
    run("redis", home, redis_clean, "exact", "a", ["1"], ARTICLES[:1])
    keys = {k.decode() for k in client.keys("*")}
    assert keys and all(k.startswith("{t}:") for k in keys)  # one hash tag: one cluster slot
    client.close()


def test_reset_removes_local_files_of_text_and_sft_indexes(home):
    run("local", home, "", "exact", "a", ["1"], ARTICLES[:1])
    run("local", home, "", "fuzzy", "a", ["1"], ARTICLES[:1])
    open_group_indexes("local", home, "", "t", SftCheckParams())["demonstration"].close()
    names = sorted(p.name for p in home.index.iterdir())
    assert "fuzzy_lsh.sqlite" in names and "sft_fuzzy_demonstration.sqlite" in names
    text_only = reset_indexes("local", home, "", "t", "fuzzy", scope="text")
    assert {os.path.basename(p) for p in text_only} >= {"fuzzy_lsh.sqlite"}
    assert all("sft_" not in p for p in text_only)
    reset_indexes("local", home, "", "t", "all")
    assert not any(p.name.endswith((".sqlite", ".pickle")) for p in home.index.iterdir())


def sft_frame(prompts, ids):
    answer = "A complete and helpful answer that explains the steps one by one, with an example."
    rows = [
        {
            "id": i,
            "source": "s",
            "kind": "instruction",
            "format": "test",
            "system": None,
            "prompt": p,
            "response": answer,
            "rejected_response": None,
            "messages": json.dumps(
                [{"role": "user", "content": p}, {"role": "assistant", "content": answer}]
            ),
            "responses": None,
            "turns": 1,
            "quality": None,
            "meta": None,
            "file": "f",
            "line": 1,
            KEY_COLUMN: p,  # an instruction's default dedup key is its prompt
        }
        for p, i in zip(prompts, ids, strict=True)
    ]
    return pd.DataFrame(rows, columns=SFT_SCHEMA.names)


def test_sft_claiming_commits_every_group_and_aborts_every_group(home):
    params = SftCheckParams()
    rules = SftRules(params)
    prompt = "Explain why the river floods every spring and what the farmers in the valley do about it."
    with (
        pytest.raises(KeyError),
        SftPromptDeduper.claiming(
            open_group_indexes("local", home, "", "t", params), "one", params
        ) as deduper,
    ):
        assert len(SftChecker(rules, deduper)(sft_frame([prompt], ["a"])).kept) == 1
        raise KeyError("failed mid-partition")
    sizes_after_abort = open_group_indexes("local", home, "", "t", params)
    assert all(ix.exact.count() == 0 and ix.fuzzy.count() == 0 for ix in sizes_after_abort.values())
    for ix in sizes_after_abort.values():
        ix.close()
    with SftPromptDeduper.claiming(
        open_group_indexes("local", home, "", "t", params), "one", params
    ) as deduper:
        first = SftChecker(rules, deduper)(sft_frame([prompt], ["a"]))
    assert first.kept["id"].tolist() == ["a"]
    assert deduper.sizes["demonstration"] == {"exact": 1, "fuzzy": 1} and deduper.withdrawn == []
    with SftPromptDeduper.claiming(
        open_group_indexes("local", home, "", "t", params), "one", params
    ) as deduper:
        SftChecker(rules, deduper)(
            sft_frame(["A different question about the weather in the hills today?"], ["b"])
        )
    assert deduper.withdrawn == ["one/a"] and deduper.replaced == 1


def test_small_chunks_give_the_same_decisions_and_withdraw_everything(home, backend, monkeypatch):
    """Claims and withdrawals are cut into chunks (one transaction / script each); tiny chunks must
    decide exactly as one chunk does, near-duplicates across chunk boundaries included."""
    import refinery.dedup.exact_index as exact_index
    import refinery.dedup.lsh_index as lsh_index
    import refinery.dedup.sharded_exact as sharded_exact
    import refinery.dedup.sharded_fuzzy as sharded_fuzzy

    kind, url = backend
    near = [prose.near_duplicate(t, random.Random(i), edits=1) for i, t in enumerate(ARTICLES[:3])]
    ids = [f"d{i}" for i in range(9)]
    texts = [
        ARTICLES[0],
        ARTICLES[1],
        near[0],
        ARTICLES[2],
        near[1],
        ARTICLES[0],
        near[2],
        ARTICLES[3],
        near[0],
    ]
    expected = {}
    for stage in ("exact", "fuzzy"):
        result, _ = run(kind, home, url, stage, "big", ids, texts)
        expected[stage] = (result.kept["id"].tolist(), result.rejected["duplicate_of"].tolist())
    monkeypatch.setattr(lsh_index, "SQLITE_CHUNK_DOCS", 2)
    monkeypatch.setattr(lsh_index, "REDIS_CHUNK_DOCS", 2)
    monkeypatch.setattr(lsh_index, "WITHDRAW_CHUNK_DOCS", 2)
    monkeypatch.setattr(exact_index, "WITHDRAW_CHUNK", 2)
    monkeypatch.setattr(sharded_fuzzy, "CHUNK_DOCS", 2)
    monkeypatch.setattr(sharded_fuzzy, "WITHDRAW_CHUNK_DOCS", 2)
    monkeypatch.setattr(sharded_exact, "WITHDRAW_CHUNK", 2)
    for stage in ("exact", "fuzzy"):
        reset_indexes(kind, home, url, "t", stage)
        result, _ = run(kind, home, url, stage, "big", ids, texts)
        assert (result.kept["id"].tolist(), result.rejected["duplicate_of"].tolist()) == expected[stage]
        _, claims = run(kind, home, url, stage, "big", [], [])
        assert claims.replaced == len(result.kept) and claims.size == 0
    assert expected["fuzzy"][1] == ["big/d0", "big/d1", "big/d0", "big/d3", "big/d0"]  # across chunks
