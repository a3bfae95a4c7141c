"""SemDeDup: k-means, the first-come rule (an option), and paraphrases with the real MiniLM embedder
(the paper's rule, the default, is checked against the authors' algorithm in test_semdedup_rule.py)."""

import random

import numpy as np
import pandas as pd
import pytest
from datasketch import MinHash

from refinery.dedup.semantic import (
    Claims,
    SemanticDeduper,
    SemanticDedupParams,
    check_alignment,
    plan,
    spherical_kmeans,
)
from refinery.models.embedder import load_embedder
from refinery.quality.embeddings import (
    EmbeddingParams,
    chunk_document,
    embed_documents,
    read_embeddings,
    write_embeddings,
)
from refinery.sample import prose
from refinery.storage import Storage

SYNONYMS = {"the": "this", "was": "is", "and": "as well as", "of": "from", "a": "one", "in": "within"}


def paraphrase(text: str, seed: int) -> str:
    """Sentences reordered within each paragraph and common words swapped: the same content in other
    words, which word-shingle MinHash no longer recognises."""
    rng = random.Random(seed)
    paragraphs = []
    for paragraph in text.split("\n\n"):
        sentences = paragraph.split(". ")
        rng.shuffle(sentences)
        words = " ".join(sentences).split(" ")
        paragraphs.append(" ".join(SYNONYMS.get(w, w) if rng.random() < 0.3 else w for w in words))
    return "\n\n".join(paragraphs)


def jaccard(a: str, b: str) -> float:
    def sig(t):
        m, w = MinHash(128, seed=1), t.lower().split()
        for i in range(len(w) - 4):
            m.update(" ".join(w[i : i + 5]).encode())
        return m

    return sig(a).jaccard(sig(b))


def unit(rng, n, d):
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def embedder():
    return load_embedder("bundled:all-MiniLM-L6-v2", "cpu", 16, True)  # as EmbedderResource asks: one load


def test_spherical_kmeans_recovers_clusters():
    rng = np.random.default_rng(0)
    centers = unit(rng, 4, 32)
    labels = np.repeat(np.arange(4), 50)
    x = centers[labels] + 0.05 * rng.normal(size=(200, 32)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    _, assign = spherical_kmeans(x, 4, 30, seed=0)
    for c in range(4):  # every true cluster lands in exactly one k-means cluster
        assert len(set(assign[labels == c])) == 1
    assert len(set(assign)) == 4
    _, again = spherical_kmeans(x, 4, 30, seed=0)
    assert np.array_equal(assign, again)


def test_greedy_first_come_rule_and_claims():
    e = np.eye(4, dtype=np.float32)
    a = e[0]
    b = 0.96 * e[0] + 0.28 * e[1]  # cos(a, b) = 0.96
    c = 0.85 * e[0] + 0.527 * e[1]  # cos(b, c) ≈ 0.96, cos(a, c) = 0.85
    vectors = np.stack([a, b, c, e[2]])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    params = SemanticDedupParams(clusters=1, rule="first_come")
    decided = plan("s", ["a", "b", "c", "d"], vectors, Claims(), params)
    # b duplicates a; c is compared with kept documents only (a), so it stays, as does d.
    assert [decided.decisions[i].duplicate for i in "abcd"] == [False, True, False, False]
    assert decided.decisions["b"].neighbour == "s/a" and decided.decisions["b"].similarity == pytest.approx(
        0.96
    )
    claims = Claims(keys=["other/x"], vectors=vectors[3:4].copy(), sources={"other": 1})
    with_claims = plan("s", ["a", "b", "c", "d"], vectors, claims, params)
    assert with_claims.decisions["d"].duplicate and with_claims.decisions["d"].neighbour == "other/x"
    alone = plan(
        "s",
        ["a", "b", "c", "d"],
        vectors,
        claims,
        SemanticDedupParams(clusters=1, rule="first_come", against_other_sources=False),
    )
    assert not alone.decisions["d"].duplicate


def test_paraphrases_are_caught_and_distinct_articles_are_not(embedder):
    rng = random.Random(12)
    # Two paragraphs: the whole article fits the model's 256 word pieces (longer ones are embedded by
    # their beginning, so reordering sentences across that window is out of its sight).
    originals = [
        prose.article(rng, rng.choice(["history", "travel", "cooking"]), paragraphs=2) for _ in range(14)
    ]
    copies = {14 + i: paraphrase(originals[i * 3], seed=i) for i in range(4)}
    assert all(jaccard(originals[(i - 14) * 3], t) < 0.5 for i, t in copies.items())  # MinHash misses them
    texts = originals + list(copies.values())
    ids = [f"d{i}" for i in range(len(texts))]
    vectors = embedder.encode(texts)
    params = SemanticDedupParams(docs_per_cluster=6)
    decided = plan("web", ids, vectors, Claims(), params)
    assert decided.clusters == 3
    flagged = {i for i, d in decided.decisions.items() if d.duplicate}
    pairs = [(f"d{(i - 14) * 3}", f"d{i}") for i in copies]
    # The paper's rule keeps whichever of a pair lies further from its centroid: one of each pair goes.
    assert len(flagged) == len(pairs) and all(len(flagged & set(pair)) == 1 for pair in pairs)
    for pair in pairs:
        (gone,) = flagged & set(pair)
        (stays,) = set(pair) - {gone}
        d = decided.decisions[gone]
        assert d.neighbour == f"web/{stays}" and d.similarity >= 0.93
    frame = pd.DataFrame({"id": ids, "text": texts})
    result = SemanticDeduper(decided, params)(frame)
    assert len(result.rejected) == len(pairs)
    assert (
        result.rejected["reason_detail"].str.contains(r"cosine 0\.9\d+ ≥ 0\.930 \(ε=0\.07\) with web/d").all()
    )
    distinct = [i for i in ids if not any(i in pair for pair in pairs)]
    assert (result.kept.set_index("id").loc[distinct, "semantic_nn_similarity"] < 0.93).all()
    first = plan("web", ids, vectors, Claims(), SemanticDedupParams(docs_per_cluster=6, rule="first_come"))
    assert {i for i, d in first.decisions.items() if d.duplicate} == {f"d{i}" for i in copies}  # the later


def test_embeddings_round_trip_and_staleness(embedder, tmp_path):
    storage = Storage(tmp_path)
    texts = [prose.article(random.Random(i), paragraphs=2) for i in range(5)]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(5)], "text": texts})
    path = storage.path("quality_scored", "s")
    path.parent.mkdir(parents=True)
    frame.to_parquet(path)
    run = write_embeddings(storage, "quality_scored", "s", embedder, {"asset": "document_embeddings"})
    assert run.rows == 5 and run.dim == 384
    emb = read_embeddings(storage, "s")
    assert emb.ids == frame["id"].tolist() and emb.model == "bundled:all-MiniLM-L6-v2"
    assert emb.vectors.dtype == np.float32 and np.allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-4)
    assert np.allclose(emb.vectors, embedder.encode(texts), atol=1e-5)
    check_alignment(emb, storage, "quality_scored", "s")
    frame.assign(text=[t + " Changed." if i == 2 else t for i, t in enumerate(texts)]).to_parquet(path)
    with pytest.raises(ValueError, match=r"stale .*text changed.*re-materialize document_embeddings"):
        check_alignment(emb, storage, "quality_scored", "s")
    with pytest.raises(FileNotFoundError, match="materialize document_embeddings"):
        read_embeddings(storage, "other")


def test_chunked_embedding_covers_long_documents(embedder):
    rng = random.Random(3)
    long_doc = prose.article(rng, "history", paragraphs=8)
    assert len(long_doc.split()) > 2 * 180
    assert chunk_document(long_doc, 180, 1) == [long_doc]
    chunks = chunk_document(long_doc, 180, 3)
    assert len(chunks) == 3 and all(len(c.split()) == 180 for c in chunks)
    head = embed_documents(embedder, [long_doc], EmbeddingParams())
    pooled = embed_documents(embedder, [long_doc], EmbeddingParams(max_chunks=4))
    parts = embedder.encode(chunk_document(long_doc, 180, 4))
    expected = (parts * np.array([len(c.split()) for c in chunk_document(long_doc, 180, 4)])[:, None]).sum(
        axis=0
    )
    assert pooled[0] == pytest.approx(expected / np.linalg.norm(expected), abs=1e-5)
    assert head[0] == pytest.approx(embedder.encode([long_doc])[0], abs=1e-5)
    assert float(head[0] @ pooled[0]) < 0.999  # the rest of the document moved the vector


def test_empty_partition(embedder, tmp_path):
    storage = Storage(tmp_path)
    path = storage.path("quality_scored", "empty")
    path.parent.mkdir(parents=True)
    pd.DataFrame({"id": pd.Series([], dtype=str), "text": pd.Series([], dtype=str)}).to_parquet(path)
    assert write_embeddings(storage, "quality_scored", "empty", embedder, {}).rows == 0
    emb = read_embeddings(storage, "empty")
    assert emb.ids == [] and emb.vectors.shape == (0, 384)
    check_alignment(emb, storage, "quality_scored", "empty")
    assert plan("empty", [], emb.vectors, Claims(), SemanticDedupParams()).decisions == {}
