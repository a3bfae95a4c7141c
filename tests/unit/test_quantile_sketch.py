"""The quantile sketch the partition-wide cut-offs come from: merging is order- and
slicing-independent (so every engine cuts alike), and every quantile is within the stated relative
accuracy of numpy's exact percentile."""

import itertools
import json

import numpy as np
import pytest

from refinery.quantiles import QuantileSketch

PERCENTILES = list(range(101))


def perplexity_like(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.exp(rng.normal(5.0, 1.5, n))  # positive, spread over several decades


@pytest.mark.parametrize("accuracy", [0.001, 0.005, 0.02])
def test_every_percentile_is_within_the_relative_accuracy_of_numpy(accuracy):
    values = perplexity_like(20_001, 1)
    values[:50] = values[0]  # ties
    sketch = QuantileSketch.of(values, accuracy)
    exact = np.percentile(values, PERCENTILES)
    estimate = np.asarray(sketch.percentiles(PERCENTILES))
    relative = np.abs(estimate - exact) / exact
    assert relative.max() <= accuracy * (1 + 1e-9), relative.max()
    assert estimate[0] == values.min() and estimate[-1] == values.max()  # the ends are exact
    assert sketch.count == len(values)


def test_merging_is_independent_of_order_and_of_how_the_values_were_cut():
    values = perplexity_like(5_000, 2)
    whole = QuantileSketch.of(values)
    rng = np.random.default_rng(3)
    for _ in range(5):
        cuts = np.sort(rng.choice(np.arange(1, len(values)), size=rng.integers(1, 12), replace=False))
        parts = [QuantileSketch.of(p) for p in np.split(values, cuts)]
        for order in itertools.islice(itertools.permutations(range(len(parts))), 4):
            merged = QuantileSketch.merged(parts[i] for i in order)
            assert merged.to_dict() == whole.to_dict()
            assert merged.percentiles([30, 60]) == whole.percentiles([30, 60])


def test_the_compact_form_round_trips_through_json_and_stays_small():
    values = perplexity_like(100_000, 4)
    sketch = QuantileSketch.of(np.append(values, [np.nan, np.inf]), 0.005)
    data = json.loads(json.dumps(sketch.to_dict()))
    again = QuantileSketch.from_dict(data)
    assert again.to_dict() == sketch.to_dict() and again.skipped == 2 and again.count == len(values)
    assert again.percentiles(PERCENTILES) == sketch.percentiles(PERCENTILES)
    # about ln(max/min) / 2α buckets, whatever the number of values
    assert sketch.buckets <= np.log(values.max() / values.min()) / (2 * 0.005) + 2
    assert len(json.dumps(data)) < 16_000


def test_negative_values_zeros_and_mixed_signs():
    values = np.concatenate([-perplexity_like(999, 5), np.zeros(7), perplexity_like(1_000, 6)])
    sketch = QuantileSketch.of(values, 0.01)
    exact = np.percentile(values, PERCENTILES)
    estimate = np.asarray(sketch.percentiles(PERCENTILES))
    assert (np.abs(estimate - exact) <= 0.01 * np.abs(exact) + 1e-12).all()
    assert sketch.percentiles([50]) == [0.0]


def test_clear_errors():
    with pytest.raises(ValueError, match="empty sketch"):
        QuantileSketch().quantile(0.5)
    with pytest.raises(ValueError, match="relative_accuracy"):
        QuantileSketch(1.5)
    with pytest.raises(ValueError, match="cannot merge"):
        QuantileSketch(0.01).merge(QuantileSketch(0.02))
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        QuantileSketch.of([1.0, 2.0]).quantile(1.5)
