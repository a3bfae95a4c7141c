"""Search with the real MiniLM over stage files, the SQL join, and the bounded nearest-kept search."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from refinery.dedup.semantic import StoredClaims
from refinery.models.embedder import load_embedder
from refinery.names import SEMANTIC_DEDUPLICATED as SEMANTIC_ASSET
from refinery.paths import Layout
from refinery.quality.embeddings import read_embeddings, write_embeddings
from refinery.retrieval import (
    IndexParams,
    ModelMismatch,
    VectorIndex,
    kept_neighbours,
    nearest_neighbours,
    search,
)
from refinery.retrieval.search_sql import search_sql
from refinery.sample import prose
from refinery.sql import connect
from refinery.storage import Storage

REPO = Path(__file__).resolve().parents[2]
MODEL = "bundled:all-MiniLM-L6-v2"
SOURCES = ("news", "forum", "web")
TOPICS = sorted(prose.TOPICS)


def _docs(source: str, n: int, rng: random.Random, copies_of: list[str]) -> pd.DataFrame:
    texts = [prose.paragraph(rng, rng.choice(TOPICS)) for _ in range(n)]
    for i, original in enumerate(copies_of):  # near copies of another source's documents
        texts[i * 3] = original.replace(" the ", " this ", 2) + f" So says the {source}."  # no exact ties
    return pd.DataFrame(
        {
            "id": [f"{source}-{i:03d}" for i in range(n)],
            "text": texts,
            "source": source,
            "quality_score": [round(rng.random(), 3) for _ in range(n)],
        }
    )


def _write(storage: Storage, asset: str, source: str, frame: pd.DataFrame, rejected: bool = False) -> None:
    path = storage.rejected_path(asset, source) if rejected else storage.path(asset, source)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(MODEL, "cpu", 16, True)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, embedder):
    """Three sources through quality_scored -> document_embeddings -> semantic_deduplicated (every
    tenth document rejected as a duplicate) -> pretrain_corpus (news and forum only), then indexed."""
    layout = Layout.at(tmp_path_factory.mktemp("home"))
    storage = Storage(layout.storage)
    rng = random.Random(3)
    frames: dict[str, pd.DataFrame] = {}
    for j, source in enumerate(SOURCES):
        earlier = frames[SOURCES[0]]["text"].tolist()[:12] if j else []
        frames[source] = _docs(source, 60 - 10 * j, rng, earlier)
        _write(storage, "quality_scored", source, frames[source])
        write_embeddings(storage, "quality_scored", source, embedder, {"asset": "document_embeddings"})
        dropped = frames[source].index % 10 == 9
        kept, rejected = frames[source][~dropped], frames[source][dropped]
        _write(storage, SEMANTIC_ASSET, source, kept.assign(semantic_nn_similarity=0.5))
        _write(
            storage,
            SEMANTIC_ASSET,
            source,
            rejected.assign(reason="semantic_duplicate", reason_detail="cosine 0.95 ≥ 0.930"),
            rejected=True,
        )
        if source != "web":
            _write(storage, "pretrain_corpus", source, kept.assign(semantic_nn_similarity=0.5))
    index = VectorIndex.at(layout)
    index.sync(storage)
    return layout, storage, frames


def test_search_names_source_stage_status_and_scores(corpus, embedder):
    layout, _, frames = corpus
    news, web = frames["news"], frames["web"]
    hits = search(news.loc[4, "text"], 5, home=layout.home, embedder=embedder)
    top = hits.iloc[0]
    assert (top["source"], top["id"], top["stage"], top["status"]) == (
        "news",
        "news-004",
        "pretrain_corpus",
        "final",
    )
    assert (
        top["score"] == pytest.approx(1.0, abs=1e-3) and top["quality_score"] == news.loc[4, "quality_score"]
    )
    assert top["text"] == news.loc[4, "text"] and list(hits["rank"]) == [1, 2, 3, 4, 5]
    assert hits["score"].is_monotonic_decreasing and set(hits["query"]) == {news.loc[4, "text"]}

    rejected = search(news.loc[19, "text"], 1, home=layout.home, embedder=embedder).iloc[0]
    assert (rejected["id"], rejected["stage"], rejected["status"]) == (
        "news-019",
        "quality_scored",
        "rejected",
    )
    assert (rejected["rejected_by"], rejected["reason"]) == ("semantic_deduplicated", "semantic_duplicate")

    pending = search(web.loc[5, "text"], 1, home=layout.home, embedder=embedder, exact=True).iloc[0]
    assert (pending["id"], pending["stage"], pending["status"]) == (
        "web-005",
        "semantic_deduplicated",
        "pending",
    )


def test_search_loads_the_indexed_model_and_refuses_another(corpus, embedder):
    layout, _, frames = corpus
    query = frames["forum"].loc[7, "text"]
    loaded = search(query, 3, home=layout.home)  # the model named in the index's provenance
    assert loaded.iloc[0]["id"] == "forum-007"
    other = dataclasses.replace(embedder, name="some-other-model")
    with pytest.raises(ModelMismatch, match="some-other-model"):
        search(query, 3, home=layout.home, embedder=other)


def test_exact_and_approximate_search_agree_on_real_embeddings(corpus, embedder):
    layout, _, frames = corpus
    queries = [frames[s].loc[i, "text"][:120] for s in SOURCES for i in (1, 2, 8)]
    approx = search(queries, 10, home=layout.home, embedder=embedder, with_stage=False)
    exact = search(queries, 10, home=layout.home, embedder=embedder, with_stage=False, exact=True)
    key = ["query", "source", "id"]
    assert len(approx[key].merge(exact[key])) / len(exact) >= 0.95


def test_hits_join_the_stage_views_in_sql(corpus, embedder):
    layout, storage, frames = corpus
    query = frames["news"].loc[11, "text"]
    joined = search_sql(
        layout.home,
        query,
        "SELECT h.rank, h.score, p.source, p.id, p.quality_score "
        "FROM vector_hits h JOIN pretrain_corpus p USING (source, id) ORDER BY h.rank",
        k=10,
        embedder=embedder,
    )
    assert joined.iloc[0]["id"] == "news-011" and set(joined["source"]) <= {
        "news",
        "forum",
    }  # web: no corpus yet
    assert joined["rank"].is_monotonic_increasing
    # Exact similarity in plain SQL over the vectors_documents view gives the same order as the index.
    vector = embedder.encode([query])[0]
    con = connect(storage.root)
    plain = con.execute(
        "SELECT source, id, array_inner_product(embedding, ?::FLOAT[384]) AS score FROM vectors_documents "
        "ORDER BY score DESC, source, id LIMIT 5",
        [vector.tolist()],
    ).df()
    exact = search(query, 5, home=layout.home, embedder=embedder, exact=True, with_stage=False)
    assert list(plain["id"]) == list(exact["id"])
    np.testing.assert_allclose(plain["score"], exact["score"], atol=1e-5)


def test_nearest_kept_equals_brute_force_over_the_stored_claims(corpus):
    layout, storage, _ = corpus
    index = VectorIndex.at(layout)
    for partition in SOURCES:
        emb = read_embeddings(storage, partition)
        claims = StoredClaims(storage, partition, emb.model, emb.dim)  # what SemDeDup compares
        blocks = list(claims.blocks())
        keys = [k for block_keys, _ in blocks for k in block_keys]
        sims = emb.vectors @ np.concatenate([v for _, v in blocks]).T
        want_keys = [keys[j] for j in sims.argmax(axis=1)]
        want_sims = sims.max(axis=1)
        got = kept_neighbours(
            storage,
            index,
            partition,
            emb.vectors,
            model=emb.model,
            exact=True,
            query_block=7,
            vector_block=13,
        )
        assert got.keys == want_keys
        np.testing.assert_allclose(got.similarity, want_sims, atol=1e-5)
        assert got.compared == claims.sources and got.skipped == {}
        approx = kept_neighbours(storage, index, partition, emb.vectors, model=emb.model)
        assert np.mean(np.array(approx.keys) == np.array(want_keys)) >= 0.95
        assert (approx.similarity <= want_sims + 1e-5).all()  # never better than the true nearest
    copies = got.similarity[[0, 3, 6]]  # web's near copies of news documents
    assert (copies > 0.9).all()


def test_nearest_kept_refuses_other_models_and_searches_only_allowed(corpus):
    layout, storage, _ = corpus
    index = VectorIndex.at(layout)
    emb = read_embeddings(storage, "news")
    other = nearest_neighbours(index, emb.vectors[:5], model="another-model", exclude=["news"])
    assert set(other.skipped) == {"forum", "web"} and other.partition == [None] * 5
    only = nearest_neighbours(
        index, emb.vectors[:20], model=emb.model, allowed={"forum": ["forum-001", "forum-002"]}
    )
    assert set(only.id) <= {"forum-001", "forum-002"} and only.compared == {"forum": 2}


def test_nearest_kept_memory_stays_bounded(tmp_path):
    """Exact mode over 8 partitions (24 MB of vectors) in blocks: the peak heap of the call stays a
    small fraction of the corpus (measured in a fresh process, numpy via tracemalloc, Arrow's pool)."""
    from tests.unit.test_retrieval_index import clustered, write_embeddings_file

    storage = Storage(tmp_path / "storage")
    for p in range(8):
        write_embeddings_file(storage, f"p{p}", clustered(6000, 128, p))
    index = VectorIndex(tmp_path / "index" / "vectors")
    index.sync(storage, IndexParams(connectivity=8, expansion_add=16))  # exact mode never walks the graph
    np.save(tmp_path / "q.npy", clustered(2000, 128, 99))
    code = textwrap.dedent(f"""
        import json, tracemalloc, numpy as np, pyarrow as pa
        import faiss  # imported first: its module objects are not the call's memory
        from refinery.retrieval import VectorIndex, nearest_neighbours
        q = np.load({str(tmp_path / "q.npy")!r})
        index = VectorIndex({str(tmp_path / "index" / "vectors")!r})
        tracemalloc.start()
        found = nearest_neighbours(
            index, q, model="test-model", exact=True, query_block=256, vector_block=1000
        )
        peak = tracemalloc.get_traced_memory()[1]
        print(json.dumps({{"numpy_peak": peak, "arrow_max": pa.default_memory_pool().max_memory(),
                           "sims": found.similarity.tolist(), "ids": found.id}}))
    """)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    corpus_bytes = 8 * 6000 * 128 * 4
    assert result["numpy_peak"] < corpus_bytes / 4, result["numpy_peak"]
    assert result["arrow_max"] < corpus_bytes / 8, result["arrow_max"]
    # And the answer is brute force's.
    q = np.load(tmp_path / "q.npy")
    allvec = np.concatenate([read_embeddings(storage, f"p{p}").vectors for p in range(8)])
    owner = [f"p{p}-{r}" for p in range(8) for r in range(6000)]
    sims = q @ allvec.T
    assert result["ids"] == [owner[j] for j in sims.argmax(axis=1)]
    np.testing.assert_allclose(result["sims"], sims.max(axis=1), atol=1e-5)


def _cli(home: Path, *argv: str) -> int:
    import argparse

    from refinery.retrieval.command import add_search_parser, add_vectors_parser

    parser = argparse.ArgumentParser(prog="refinery")
    parser.add_argument("--home", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    add_search_parser(sub)
    add_vectors_parser(sub.add_parser("index").add_subparsers(dest="index_command", required=True))
    args = parser.parse_args(["--home", str(home), *argv])
    return args.func(args)


def test_search_and_index_commands(corpus, capsys):
    layout, _, frames = corpus
    assert _cli(layout.home, "index", "vectors", "--collection", "documents") == 0
    out = capsys.readouterr().out
    assert "fresh" in out and "news" in out and "built" not in out  # already in line with storage
    query = frames["news"].loc[4, "text"]
    assert _cli(layout.home, "search", query, "--k", "3", "--format", "json") == 0
    hits = json.loads(capsys.readouterr().out)
    assert (
        [h["rank"] for h in hits] == [1, 2, 3]
        and hits[0]["id"] == "news-004"
        and hits[0]["status"] == "final"
    )
    sql = "SELECT h.rank, p.id FROM vector_hits h JOIN pretrain_corpus p USING (source, id) ORDER BY h.rank"
    assert _cli(layout.home, "search", query, "--sql", sql, "--format", "csv") == 0
    assert capsys.readouterr().out.splitlines()[:2] == ["rank,id", "1,news-004"]
    assert _cli(layout.home, "search", query, "--collection", "images") == 2  # nothing indexed there
    assert "images vector index" in capsys.readouterr().err
