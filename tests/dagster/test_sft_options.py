"""Every option of the SFT stages (``raw_sft`` → ``sft_checked`` → ``sft_selected``), through
Dagster's ``materialize``, on the bundled SFT sample (its four sources carry planted refusals,
echoes, truncations, duplicates, a non-English record, identical preference pairs and tied ranks).

One round per source, all in one home (the prompt-dedup indexes are shared, so every round uses the
same MinHash settings). Each round checks that the options reached the library (the provenance of
the output records them) and had their documented effect. ``test_option_coverage.py`` fails when a
new option is in no round.
"""

from __future__ import annotations

import json
import math

import dagster as dg
import numpy as np
import pytest

from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.paths import Layout
from refinery.sample.sft_sample import SFT_SOURCES, build_sft_sample
from refinery.sft.check import SftCheckParams
from refinery.sft.reader import SftIngestParams
from refinery.sft.select import SelectionParams
from refinery.storage import Storage
from resources import build_resources

CHAIN = [raw_sft, sft_checked, sft_selected]
PARAMS = {"raw_sft": SftIngestParams, "sft_checked": SftCheckParams, "sft_selected": SelectionParams}
MINHASH = {"num_perm": 64, "ngram": 2, "threshold": 0.6, "seed": 3, "recall": 0.95}
CUSTOM_REFUSAL = [r"\bwhat a great question\b"]
ROUNDS: dict[str, dict] = {
    "alpaca": {
        "raw_sft": {
            "max_document_chars": 600,
            "batch_rows": 4,
            "dedup_key": {"instruction": "prompt_responses"},
        },
        "sft_checked": {
            **MINHASH,
            "max_prompt_chars": 200,
            "max_response_chars": 350,
            "max_prompt_overlap": 0.5,
            "refusal_patterns": CUSTOM_REFUSAL,
            "disabled_rules": ["language.not_english", "truncated_response"],
            "normalization": "none",
        },
        "sft_selected": {
            "budget_count": 6,
            "n_clusters": 3,
            "allocation": "uniform",
            "within_cluster": "centroid",
            "kmeans_iterations": 5,
            "kmeans_restarts": 2,
            "seed": 4,
            "kmeans_sample_rows": 5,  # k-means fitted on 5 records drawn with seed; every record assigned
        },
    },
    "chat": {
        "sft_checked": {**MINHASH, "max_turns": 2, "exact": False, "fuzzy": False, "language_gate": False},
        "sft_selected": {"budget_fraction": 0.3},
    },
    "preference": {
        "sft_checked": {
            **MINHASH,
            "exact_groups": ["demonstration"],
            "fuzzy_groups": ["demonstration", "preference"],
            "min_english_word_fraction": 0.35,
        },
        "sft_selected": {"budget_fraction": 0.5, "within_cluster": "quality", "n_clusters": 2},
    },
    # A strict fraction that only records of 1000 words or more would meet: none is that long.
    "ranked": {
        "sft_checked": {**MINHASH, "min_english_word_fraction": 0.45, "language_gate_min_words": 1000}
    },
}


def resources(layout) -> dict:
    return build_resources("local", home=str(layout.home), device="cpu", batch_size=32)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory):
    layout = Layout.at(tmp_path_factory.mktemp("sft-options") / "home")
    build_sft_sample(layout.inbox_kind("sft"), seed=3, records_per_source=24)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("sft_source", list(SFT_SOURCES))
        for source, plan in ROUNDS.items():
            run_config = {"ops": {stage: {"config": options} for stage, options in plan.items()}}
            result = dg.materialize(
                CHAIN,
                partition_key=source,
                instance=instance,
                resources=resources(layout),
                run_config=run_config,
            )
            assert result.success, source
        yield Storage(layout.storage)


def frames(storage: Storage, stage: str, source: str):
    return storage.read(stage, source), storage.read(stage, source, rejected=True)


@pytest.mark.parametrize("source", list(ROUNDS))
def test_options_are_recorded(rounds, source):
    for stage, options in ROUNDS[source].items():
        stamp = rounds.provenance(stage, source)["params"]
        expected = json.loads(json.dumps(PARAMS[stage](**options).model_dump()))
        assert {k: stamp[k] for k in options} == {k: expected[k] for k in options}, stage


def test_alpaca_limits_and_rules(rounds):
    storage = rounds
    # raw_sft: records over 600 characters quarantined; dedup_text is the prompt and its response
    quarantined = storage.read("raw_sft", "alpaca", rejected=True)
    assert "oversized" in set(quarantined["reason"])
    raw = storage.read("raw_sft", "alpaca")
    assert all(r in d for d, r in zip(raw["dedup_text"], raw["response"], strict=True))
    assert (raw["prompt"].str.len() + raw["response"].fillna("").str.len() <= 600).all()
    kept, rejected = frames(storage, "sft_checked", "alpaca")
    reasons = set(rejected["reason"])
    assert (kept["prompt_chars"] <= 200).all() and "prompt_too_long" in reasons
    assert (kept["response_chars"] <= 350).all() and "response_too_long" in reasons
    assert (kept["prompt_overlap"].fillna(0) < 0.5).all()
    # the default refusal patterns are replaced; the two disabled rules never fire
    assert not reasons & {"refusal", "language.not_english", "truncated_response"}
    assert kept["response"].str.lower().str.contains("as an ai").any()  # the planted refusal, kept
    near = rejected[rejected["reason"] == "near_duplicate"]
    assert (near["similarity"] >= 0.6).all()


def test_chat_turns_and_dedup_off(rounds):
    kept, rejected = frames(rounds, "sft_checked", "chat")
    assert (kept["turns"] <= 2).all() and "too_many_turns" in set(rejected["reason"])
    assert not set(rejected["reason"]) & {"exact_duplicate", "near_duplicate", "language.not_english"}
    assert kept["content_hash"].duplicated().any()  # the planted copies pass with exact off


def test_preference_groups_and_language_gate(rounds):
    kept, rejected = frames(rounds, "sft_checked", "preference")
    assert "exact_duplicate" not in set(rejected["reason"])  # preference left out of exact dedup
    assert kept["near_dup_similarity"].notna().all()  # preference is in a fuzzy group now
    gated = rejected[rejected["reason"] == "language.not_english"]
    assert len(gated) > 0 and (gated["english_word_fraction"] < 0.35).all()
    assert (gated["english_word_fraction"] >= 0.1).all()  # English enough for the default 0.1
    assert (kept["english_word_fraction"] >= 0.35).all()


def test_short_records_skip_the_gate(rounds):
    kept, rejected = frames(rounds, "sft_checked", "ranked")
    assert "language.not_english" not in set(rejected["reason"])
    assert (kept["english_word_fraction"] < 0.45).any()


def _selection(storage, source):
    kept, rejected = frames(storage, "sft_selected", source)
    dropped = rejected[rejected["reason"] == "not_selected"]
    return kept, dropped


def test_selection_budget_clusters_centroid(rounds):
    kept, dropped = _selection(rounds, "alpaca")
    assert len(kept) == 6
    assert len(kept) + len(dropped) > 5  # more records than the k-means sample: all were assigned
    clusters = set(kept["cluster"]) | set(dropped["cluster"])
    assert clusters <= {0, 1, 2} and len(clusters) == 3
    per_cluster = kept["cluster"].value_counts()
    sizes = (kept["cluster"].value_counts() + dropped["cluster"].value_counts()).fillna(0)
    # uniform: equal quotas, water-filled where a cluster is smaller than its share
    assert per_cluster.max() - per_cluster[per_cluster < sizes[per_cluster.index]].min() <= 1
    for cluster, rows in kept.groupby("cluster"):  # centroid: the nearest records of each cluster
        others = dropped[dropped["cluster"] == cluster]["cluster_distance"]
        assert others.empty or rows["cluster_distance"].max() <= others.min()


def test_selection_fraction_and_quality(rounds):
    kept, dropped = _selection(rounds, "chat")
    assert len(kept) == math.ceil(0.3 * (len(kept) + len(dropped)))
    kept, dropped = _selection(rounds, "preference")
    assert len(kept) == math.ceil(0.5 * (len(kept) + len(dropped)))
    assert set(kept["cluster"]) | set(dropped["cluster"]) <= {0, 1}
    for cluster, rows in kept.groupby("cluster"):  # quality: the highest-scored records first
        others = dropped[dropped["cluster"] == cluster]["quality"].dropna()
        assert others.empty or np.nanmin(rows["quality"]) >= others.max()
