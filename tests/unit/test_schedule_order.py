"""Ordering strategies: mixing keeps every prefix in proportion, sequential phases replay earlier
data at the asked ratio, and the curriculum is monotone in difficulty within the pacing."""

import numpy as np
import pandas as pd
import pytest

from refinery.schedule.order import (
    ScheduleParams,
    available_limit,
    curriculum_order,
    eval_order,
    order_mixture,
    pacing,
)


def mixture(counts: dict[str, int], seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [
        {
            "domain": d,
            "source": d,
            "id": f"{d}-{i % max(1, n // 2)}",
            "row": i,
            "tokens": int(rng.integers(10, 500)),
            "epoch": int(i >= max(1, n // 2)),
        }
        for d, n in counts.items()
        for i in range(n)
    ]
    return pd.DataFrame(rows)


def test_pacing_functions_start_at_c0_and_reach_everything():
    t = np.linspace(0, 1, 101)
    for kind in ("linear", "root", "step"):
        g = pacing(t, kind, 0.2, stages=4)
        assert g[0] == pytest.approx(0.2) and g[-1] == pytest.approx(1.0)
        assert (np.diff(g) >= -1e-12).all()
    assert pacing(np.array([0.25]), "root", 0.2)[0] > pacing(np.array([0.25]), "linear", 0.2)[0]
    assert len(set(np.round(pacing(t, "step", 0.2, 4), 6))) == 4
    with pytest.raises(ValueError):
        pacing(t, "cubic", 0.2)


@pytest.mark.parametrize("kind", ["linear", "root", "step"])
def test_curriculum_is_monotone_in_difficulty_within_the_pacing(kind):
    rng = np.random.default_rng(1)
    difficulty = rng.lognormal(3, 1, size=3000)
    order = curriculum_order(difficulty, kind, 0.1, 5, seed=2)
    assert sorted(order) == list(range(3000))  # every row exactly once
    rank = np.argsort(np.argsort(difficulty, kind="stable"), kind="stable")[order]
    limit = available_limit(3000, kind, 0.1, 5)
    assert (rank < limit).all()  # never harder than the pacing allows at that point
    tenths = [rank[i * 300 : (i + 1) * 300].mean() for i in range(10)]  # mean difficulty rank
    assert (np.diff(tenths) > 0).all() and tenths[-1] > 3 * tenths[0]
    assert not np.array_equal(order, np.argsort(difficulty))  # paced sampling, not a plain sort


def test_mixing_keeps_every_prefix_in_proportion():
    mix = mixture({"a": 600, "b": 300, "c": 100})
    out = order_mixture(mix, ScheduleParams(strategy="mixing", docs_per_step=10))
    assert sorted(zip(out["id"], out["epoch"], strict=True)) == sorted(
        zip(mix["id"], mix["epoch"], strict=True)
    )
    shares = {"a": 0.6, "b": 0.3, "c": 0.1}
    for prefix in (10, 50, 200, 777, 1000):
        counts = out["domain"].iloc[:prefix].value_counts()
        for d, s in shares.items():
            assert abs(counts.get(d, 0) - s * prefix) <= 2  # stride scheduling: within a document or two
    for _d, part in out.groupby("domain"):
        assert part["epoch"].is_monotonic_increasing  # a domain's epochs in order
    assert (out["step"] == out["position"] // 10).all() and (out["phase"] == 0).all()


def test_sequential_with_replay():
    mix = mixture({"a": 200, "b": 200, "c": 100})
    out = order_mixture(
        mix, ScheduleParams(strategy="sequential", replay_ratio=0.2, domain_order=["c", "a", "b"])
    )
    own = out[~out["replay"]]
    assert own["domain"].tolist() == ["c"] * 100 + ["a"] * 200 + ["b"] * 200  # phases in the order asked
    assert out.groupby("phase")["domain"].agg(lambda s: s[~out.loc[s.index, "replay"]].iloc[0]).tolist() == [
        "c",
        "a",
        "b",
    ]
    for phase, earlier in ((1, {"c"}), (2, {"c", "a"})):
        part = out[out["phase"] == phase]
        assert part["replay"].mean() == pytest.approx(0.2, abs=0.01)
        assert set(part.loc[part["replay"], "domain"]) == earlier  # replay re-reads earlier phases only
    assert not out.loc[out["phase"] == 0, "replay"].any()
    assert out["phase"].is_monotonic_increasing
    with pytest.raises(ValueError, match="lacks domains"):
        order_mixture(mix, ScheduleParams(strategy="sequential", domain_order=["a"]))


def test_curriculum_through_order_mixture_and_eval_order():
    mix = mixture({"a": 300, "b": 200})
    difficulty = mix["tokens"].to_numpy(float)
    out = order_mixture(
        mix,
        ScheduleParams(strategy="curriculum", pacing="step", pacing_stages=4, pacing_start=0.25),
        difficulty,
    )
    assert sorted(out["difficulty"]) == sorted(difficulty)
    assert out["phase"].tolist() == sorted(out["phase"]) and out["phase"].max() == 3
    means = out.groupby("phase")["difficulty"].mean()
    assert means.is_monotonic_increasing
    with pytest.raises(ValueError):
        order_mixture(mix, ScheduleParams(strategy="curriculum"))
    held = eval_order(mix[["domain", "source", "id", "tokens"]].drop_duplicates("id"), seed=3)
    assert held["position"].tolist() == list(range(len(held))) and held["id"].is_unique
