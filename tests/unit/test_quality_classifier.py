"""The fastText-like quality classifier: features, training with torch, the saved file, the keep rules."""

import itertools
import json
import random
import zlib

import numpy as np
import pandas as pd
import pytest

from refinery.quality.classifier import (
    ClassifierError,
    ClassifierTrainParams,
    QualityClassifier,
    QualityParams,
    QualityScorer,
    bottom_k,
    fold_of,
    hashed_features,
    load_classifier,
    pareto_noise,
    roc_auc,
    save_classifier,
    train_classifier,
)
from refinery.sample import prose
from refinery.sample.reference_sample import reference_articles

PARAMS = ClassifierTrainParams(buckets=1 << 16, epochs=5)


def junk(rng: random.Random) -> str:
    maker = rng.choice([prose.boilerplate_page, prose.keyword_spam, prose.bullet_dump, prose.short_stub])
    return maker(rng)


def gibberish(rng: random.Random) -> str:
    return " ".join("".join(rng.choice("qwrtzpsdfgkl") for _ in range(rng.randint(3, 9))) for _ in range(80))


@pytest.fixture(scope="module")
def corpus():
    """Positives: the reference sample (scaled down). Negatives: web-like text, mostly junk, some prose."""
    positives = [(f"ref/{r['id']}", r["text"]) for r in reference_articles(seed=3, scale=0.5)]
    rng = random.Random(8)
    negatives = [(f"web/j{i}", junk(rng)) for i in range(90)]
    negatives += [(f"web/p{i}", prose.article(rng, paragraphs=2)) for i in range(30)]
    return positives, negatives


@pytest.fixture(scope="module")
def trained(corpus):
    return train_classifier(*corpus, PARAMS)


def as_classifier(trained) -> QualityClassifier:
    return QualityClassifier.from_trained(trained)


def test_features_are_stable_hashed_ngrams():
    tokens = ["the", "old", "mill"]
    ids = hashed_features(tokens, 1 << 20, 2)
    h = [zlib.crc32(t.encode()) for t in tokens]
    assert ids[:3].tolist() == [x % (1 << 20) for x in h]  # unigrams: crc32, the same in every process
    assert ids[3:].tolist() == [((h[i] * 116049371 + h[i + 1]) % 2**64) % (1 << 20) for i in range(2)]
    assert len(hashed_features(tokens, 1024, 3)) == 3 + 2 + 1
    assert len(hashed_features([], 1024, 2)) == 0


def test_roc_auc_matches_pairwise_definition():
    rng = np.random.default_rng(0)
    labels = rng.random(60) < 0.4
    scores = np.round(rng.random(60) + labels * 0.3, 1)  # rounding makes ties
    pairs = [(p, n) for p, n in itertools.product(scores[labels], scores[~labels])]
    expected = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs) / len(pairs)
    assert roc_auc(labels, scores) == pytest.approx(expected)
    assert roc_auc(np.array([True, False]), np.array([0.9, 0.1])) == 1.0


def test_reference_text_scores_higher_than_junk_and_gibberish(trained):
    metrics = trained.metrics
    assert metrics["heldout_auc"] > 0.9 and metrics["heldout_accuracy"] > 0.8
    assert metrics["heldout_mean_score"]["reference"] > metrics["heldout_mean_score"]["raw"]
    classifier = as_classifier(trained)
    rng = random.Random(99)
    unseen_reference = [r["text"] for r in reference_articles(seed=1234, scale=0.1)]
    good = classifier.score(unseen_reference)
    bad = classifier.score(
        [prose.boilerplate_page(rng), prose.keyword_spam(rng), gibberish(rng), gibberish(rng)]
    )
    assert good.min() > bad.max(), (good, bad)
    assert ((good >= 0) & (good <= 1)).all() and ((bad >= 0) & (bad <= 1)).all()


def test_training_is_deterministic(corpus, trained):
    again = train_classifier(*corpus, PARAMS)
    assert np.array_equal(again.row_logits(), trained.row_logits()) and again.biases == trained.biases


def test_saved_file_scores_like_the_torch_models(trained, tmp_path):
    """numpy scoring of the saved file = torch's EmbeddingBag + Linear of the fold's model."""
    import torch

    path = tmp_path / "clf.safetensors"
    save_classifier(trained, path)
    loaded = load_classifier(path)
    texts = [r["text"] for r in reference_articles(seed=5, scale=0.05)] + [junk(random.Random(2))]
    keys = [f"web/t{i}" for i in range(len(texts))]
    feats = [loaded.features(t) for t in texts]
    flat = torch.from_numpy(np.concatenate(feats))
    offsets = torch.tensor(np.cumsum([0] + [len(f) for f in feats[:-1]]))
    logits = []
    for k in range(PARAMS.folds):
        emb = torch.nn.EmbeddingBag.from_pretrained(torch.from_numpy(trained.embeddings[k]), mode="mean")
        logits.append(
            (emb(flat, offsets) @ torch.from_numpy(trained.weights[k]) + trained.biases[k]).double()
        )
    per_fold = torch.stack(logits).numpy()
    folds = [fold_of(key, PARAMS.folds) for key in keys]
    expected = 1 / (1 + np.exp(-per_fold[folds, np.arange(len(texts))]))
    assert loaded.score(texts, keys) == pytest.approx(expected, abs=1e-5)
    assert loaded.score(texts) == pytest.approx(1 / (1 + np.exp(-per_fold.mean(axis=0))), abs=1e-5)
    assert loaded.sha256 and loaded.path == path.resolve()


def test_training_documents_are_scored_by_the_model_that_did_not_see_them(corpus, trained):
    """Cross-fitting: a raw document's fold model never trained on it; the other fold's model did, as a
    negative, and has partly memorized it: it scores those documents lower."""
    _, negatives = corpus
    classifier = as_classifier(trained)
    keys = [k for k, _ in negatives if k.startswith("web/p")]
    texts = dict(negatives)
    feats = [classifier.features(texts[k]) for k in keys]
    out_of_fold = classifier.score_features(feats, keys)
    other = [1 - fold_of(k, PARAMS.folds) for k in keys]
    logits = [
        classifier.row_logits[o, f].mean() + classifier.biases[o] for o, f in zip(other, feats, strict=True)
    ]
    in_fold = 1 / (1 + np.exp(-np.array(logits)))
    assert (in_fold < out_of_fold).mean() > 0.8, (in_fold, out_of_fold)


def test_classifier_file_errors(trained, tmp_path):
    with pytest.raises(FileNotFoundError, match="materialize the quality_classifier asset"):
        load_classifier(tmp_path / "missing.safetensors")
    not_a_model = tmp_path / "notes.safetensors"
    not_a_model.write_text("just some text")
    with pytest.raises(ClassifierError, match="not a quality classifier"):
        load_classifier(not_a_model)
    from safetensors.numpy import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": np.zeros(3, dtype=np.float32)}, str(foreign))
    with pytest.raises(ClassifierError, match="no refinery classifier config"):
        load_classifier(foreign)
    old = tmp_path / "old.safetensors"
    config = {**trained.config, "normalization": "ccnet-words-0"}
    save_classifier(type(trained)(trained.embeddings, trained.weights, trained.biases, config, {}), old)
    with pytest.raises(ClassifierError, match="re-materialize quality_classifier"):
        load_classifier(old)


def test_too_little_training_data_is_refused(corpus):
    positives, negatives = corpus
    with pytest.raises(ClassifierError, match="at least 20 documents per class"):
        train_classifier(positives[:5], negatives, PARAMS)


def test_pareto_noise_is_seeded_lomax():
    keys = [f"src/{i}" for i in range(20_000)]
    draws = pareto_noise(keys, 9.0, seed=1)
    assert np.array_equal(draws, pareto_noise(keys, 9.0, seed=1))
    assert not np.array_equal(draws, pareto_noise(keys, 9.0, seed=2))
    assert draws.mean() == pytest.approx(1 / 8, rel=0.05)  # Lomax(α) mean = 1/(α-1)
    for score in (0.5, 0.8, 0.95):  # GPT-3's keep rate: P(pareto > 1 - s) = (2 - s) ** -α
        assert (draws > 1 - score).mean() == pytest.approx((2 - score) ** -9, abs=0.01)


def test_scorer_keep_rules(trained):
    classifier = as_classifier(trained)
    rng = random.Random(4)
    texts = [r["text"] for r in reference_articles(seed=77, scale=0.05)] + [prose.keyword_spam(rng), "\x01"]
    frame = pd.DataFrame({"id": [f"d{i}" for i in range(len(texts))], "text": texts})
    scores = classifier.score(texts)
    cutoff = float(np.median(scores[:-1]))
    result = QualityScorer(classifier, QualityParams(threshold=cutoff), "web", cutoff)(frame)
    rejected = result.rejected.set_index("id")
    assert rejected.loc[f"d{len(texts) - 1}", "reason"] == "quality.no_tokens"
    assert (result.kept["quality_score"] >= cutoff).all()
    assert set(rejected["reason"]) == {"quality.below_threshold", "quality.no_tokens"}
    pareto = QualityScorer(classifier, QualityParams(mode="pareto"), "web", float("nan"))(frame)
    assert len(pareto.kept) + len(pareto.rejected) == len(frame)
    again = QualityScorer(classifier, QualityParams(mode="pareto"), "web", float("nan"))(frame)
    assert pareto.kept["id"].tolist() == again.kept["id"].tolist()  # seeded per document


def test_reference_percentile_cutoff():
    table = np.linspace(0.2, 0.9, 101).tolist()
    value, origin = QualityParams().cutoff(table)
    assert value == pytest.approx(0.27) and "p10" in origin
    assert QualityParams(threshold=0.6).cutoff(None) == (0.6, "threshold")
    with pytest.raises(ClassifierError, match="set quality_scored's threshold"):
        QualityParams().cutoff(None)


def test_bottom_k_is_a_stable_subsample():
    items = [(f"k{i}", str(i)) for i in range(500)]
    picked = bottom_k(items, 50, "s")
    assert len(picked) == 50 and picked == bottom_k(list(reversed(items)), 50, "s")
    assert bottom_k(items, 1000, "s") == sorted(items)
    assert json.dumps(picked) != json.dumps(bottom_k(items, 50, "other-salt"))
