"""The token-budgeted mixture: shares follow the weights, small domains repeat epoch by epoch,
caps redistribute, and importance resampling prefers important documents."""

import numpy as np
import pandas as pd
import pytest

from refinery.mixing.mixture import MixtureParams, build_mixture, normalise, plan_budget, sample_domain


def corpus(sizes: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for domain, n in sizes.items():
        tokens = rng.integers(50, 150, size=n)
        rows += [
            {"domain": domain, "source": domain, "id": f"{domain}-{i}", "row": i, "tokens": int(t)}
            for i, t in enumerate(tokens)
        ]
    return pd.DataFrame(rows)


def test_plan_budget_redistributes_empty_and_capped_domains():
    assert plan_budget({"a": 0.5, "b": 0.5}, {"a": 100, "b": 100}, 1000, None) == {"a": 500, "b": 500}
    empty = plan_budget({"a": 0.5, "b": 0.25, "c": 0.25}, {"a": 0, "b": 100, "c": 100}, 1000, None)
    assert empty == {"a": 0.0, "b": 500, "c": 500}
    capped = plan_budget({"a": 0.8, "b": 0.2}, {"a": 100, "b": 10_000}, 1000, 2.0)
    assert capped["a"] == 200 and capped["b"] == 800
    with pytest.raises(ValueError):
        normalise({"a": -1.0})


def test_sample_domain_repeats_whole_epochs_first():
    tokens = np.full(10, 100)
    index, epoch = sample_domain(tokens, 2_550, np.random.default_rng(0))
    counts = np.bincount(index, minlength=10)
    assert counts.min() >= 2 and counts.max() <= 3 and (counts == 3).sum() in (5, 6)
    assert (epoch[:20] < 2).all() and (epoch[20:] == 2).all()
    assert abs(tokens[index].sum() - 2_550) <= 100
    assert sample_domain(tokens, 0, np.random.default_rng(0))[0].size == 0


def test_mixture_shares_follow_weights_and_report_epochs():
    docs = corpus({"big": 400, "mid": 100, "tiny": 10})
    weights = {"big": 0.5, "mid": 0.3, "tiny": 0.2}
    budget = 30_000
    mixture, plans = build_mixture(docs, weights, MixtureParams(token_budget=budget))
    shares = mixture.groupby("domain")["tokens"].sum() / budget
    for domain, w in weights.items():
        assert shares[domain] == pytest.approx(w, abs=150 / budget)  # within one document
    by = {p.domain: p for p in plans}
    assert by["tiny"].epochs > 4 > by["big"].epochs  # tiny is repeated many times: the asset warns
    assert by["tiny"].epochs == pytest.approx(by["tiny"].tokens / by["tiny"].available_tokens)
    tiny = mixture[mixture["domain"] == "tiny"]
    assert tiny.groupby("id").size().max() - tiny.groupby("id").size().min() <= 1  # evenly repeated
    assert set(mixture.columns) >= {"domain", "source", "id", "row", "tokens", "epoch"}
    again, _ = build_mixture(docs, weights, MixtureParams(token_budget=budget))
    pd.testing.assert_frame_equal(mixture, again)  # seeded


def test_default_budget_and_errors():
    docs = corpus({"a": 20, "b": 20})
    mixture, _ = build_mixture(docs, {"a": 1, "b": 1}, MixtureParams())
    assert mixture["tokens"].sum() == pytest.approx(docs["tokens"].sum(), abs=300)
    with pytest.raises(ValueError, match="no documents"):
        build_mixture(docs, {"a": 1, "zzz": 1}, MixtureParams())
    with pytest.raises(ValueError, match="DSIR"):
        build_mixture(docs, {"a": 1}, MixtureParams(within_domain="importance"))


def test_importance_resampling_prefers_important_documents():
    docs = corpus({"a": 200}).assign(log_weight=lambda f: np.where(f["row"] < 50, 5.0, -5.0))
    budget = int(docs.loc[docs["row"] < 50, "tokens"].sum())
    mixture, _ = build_mixture(
        docs, {"a": 1.0}, MixtureParams(token_budget=budget, within_domain="importance")
    )
    assert (mixture["row"] < 50).mean() > 0.9
    random_pick, _ = build_mixture(
        docs.drop(columns="log_weight"), {"a": 1.0}, MixtureParams(token_budget=budget)
    )
    assert (random_pick["row"] < 50).mean() < 0.5
