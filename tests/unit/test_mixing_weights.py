"""DSIR favours the domain that resembles the target; DoReMi's loop raises the weight of the
domain with the highest excess loss (constructed case: a learned, an unlearnable and a
learnable domain)."""

import random

import numpy as np
import pytest

from refinery.mixing.doremi import DomainBytes, DoremiParams, run_doremi, update_weights
from refinery.mixing.dsir import (
    DsirParams,
    HashedNgrams,
    ImportanceModel,
    domain_weights_from_documents,
    gumbel_top_k,
)
from refinery.sample import prose


def articles(topics, n, seed):
    rng = random.Random(seed)
    return [prose.article(rng, rng.choice(topics), paragraphs=3) for _ in range(n)]


def test_hashed_ngrams_are_deterministic_and_cover_every_word():
    ng = HashedNgrams(1000, [1, 2])
    buckets, owner = ng.features(["The cat sat.", "the CAT sat!", "dogs bark loudly today"])
    first = buckets[owner == 0]
    assert sorted(first) == sorted(buckets[owner == 1])  # same simplified words
    assert (owner == 2).sum() == 4 + 3  # unigrams + bigrams
    assert ((buckets >= 0) & (buckets < 1000)).all()
    again, _ = HashedNgrams(1000, [1, 2]).features(["The cat sat."])
    assert sorted(again) == sorted(first)


def test_dsir_weights_favour_the_domain_resembling_the_target():
    domains = {
        "space": articles(["astronomy"], 40, 1),
        "food": articles(["cooking"], 40, 2),
        "money": articles(["economics"], 40, 3),
    }
    target = articles(["astronomy"], 30, 99)  # other documents, same kind of text
    model = ImportanceModel(DsirParams())
    model.fit_target([target])
    for texts in domains.values():
        model.fit_raw(texts)
    logw = np.concatenate([model.log_weights(t) for t in domains.values()])
    names = np.repeat(list(domains), 40)
    result = domain_weights_from_documents(logw, names, np.full(len(names), 100), DsirParams())
    weights = dict(zip(result.domains, result.weights, strict=True))
    assert max(weights, key=weights.get) == "space" and weights["space"] > 0.9
    means = dict(zip(result.domains, result.mean_log_weight, strict=True))
    assert means["space"] > max(means["food"], means["money"]) + 1  # only the order matters
    assert sum(result.resampled_documents) == 24  # resample_fraction 0.2 of 120


def test_length_normalisation_keeps_long_documents_from_winning_by_size():
    model = ImportanceModel(DsirParams())
    model.fit_target([articles(["astronomy"], 20, 5)])
    model.fit_raw(articles(["astronomy", "cooking"], 40, 6))
    short = articles(["astronomy"], 1, 7)[0]
    long = "\n\n".join([short] * 6)  # the same text six times: same per-feature weight, six times the sum
    per_feature = model.log_weights([short, long])
    assert per_feature[1] == pytest.approx(per_feature[0], rel=0.05)
    raw = ImportanceModel(DsirParams(length_normalize=False))
    raw.target_counts, raw.raw_counts = model.target_counts, model.raw_counts
    summed = raw.log_weights([short, long])
    assert summed[1] == pytest.approx(6 * summed[0], rel=0.05)


def test_gumbel_top_k_samples_in_proportion():
    logw = np.log(np.array([8.0, 1.0, 1.0]))
    hits = np.zeros(3)
    for seed in range(400):
        hits[gumbel_top_k(logw, 1, seed)] += 1
    assert hits[0] / 400 == pytest.approx(0.8, abs=0.06)
    assert sorted(gumbel_top_k(logw, 5, 0)) == [0, 1, 2]


def test_multiplicative_weights_raise_the_highest_excess():
    alpha = np.full(3, 1 / 3)
    history = [alpha]
    for _ in range(20):
        alpha = update_weights(alpha, np.array([0.1, 0.5, 0.0]), eta=1.0, smoothing=1e-3)
        history.append(alpha)
    w = np.array(history)
    assert (np.diff(w[:, 1]) > 0).all() and (np.diff(w[:, 2]) < 0).all()
    assert abs(alpha.sum() - 1) < 1e-12 and alpha.min() >= 1e-3 / 3


def test_doremi_loop_upweights_the_domain_with_the_highest_excess_loss():
    """const is learned in a few steps, noise cannot be learned beyond its unigram entropy, prose
    keeps a gap to the reference: prose must end with the highest weight.

    Reference and proxy train for the same number of steps (the default, reference_steps=None).
    The gap does not need a longer-trained reference: the reference is trained to the end before
    the proxy starts, so at its step t < T the proxy is compared with a model of T steps, and on a
    domain still being learned its loss stays above the reference's for most of the run (measured:
    prose 0.49 / noise 0.41 / const 0.10 at 80 + 80 steps, 0.52 / 0.38 / 0.09 with a 160-step
    reference, 0.62 / 0.30 / 0.08 at 120 + 120)."""
    nrng = np.random.default_rng(0)
    texts = {
        "const": ["a" * 1000 for _ in range(10)],
        "noise": [bytes(nrng.integers(33, 127, size=1000, dtype=np.uint8)).decode() for _ in range(10)],
        "prose": articles(list(prose.TOPICS), 30, 11),
    }
    params = DoremiParams(
        steps=80,
        d_model=32,
        n_layers=1,
        n_heads=2,
        seq_len=48,
        batch_per_domain=4,
        lr=0.01,
        threads=1,
    )
    data = [
        DomainBytes.from_texts(n, t, 100, params.max_bytes_per_domain, 0.1, i)
        for i, (n, t) in enumerate(texts.items())
    ]
    assert params.reference_steps is None  # equal steps for both models
    result = run_doremi(data, params)
    w = dict(zip(result.domains, result.weights, strict=True))
    excess = dict(zip(result.domains, result.mean_excess, strict=True))
    assert max(excess, key=excess.get) == "prose"
    assert max(w, key=w.get) == "prose" and w["prose"] > 1 / 3
    assert w["const"] < 1 / 3
    prose_path = [t["weight"] for t in result.trajectory if t["domain"] == "prose"]
    assert prose_path[-1] > prose_path[0] and len(prose_path) == 80
    ref = dict(zip(result.domains, result.reference_loss, strict=True))
    assert ref["const"] < ref["prose"] < ref["noise"]  # the reference learned what is learnable
    assert abs(result.weights.sum() - 1) < 1e-9


def test_doremi_needs_two_domains():
    params = DoremiParams(steps=1)
    one = [DomainBytes.from_texts("a", ["some text here"], 3, 1000, 0.1, 0)]
    with pytest.raises(ValueError, match="at least two"):
        run_doremi(one, params)
