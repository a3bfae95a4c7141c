"""The real SFT chain under materialize(): raw_sft → sft_checked → sft_selected on the bundled
sample (small), with the real embedder on the CPU and the local dedup indexes."""

import itertools
import json

import dagster as dg
import pyarrow.parquet as pq
import pytest

from assets.sft import raw_sft, sft_checked, sft_selected
from refinery.paths import Layout
from refinery.sample.sft_sample import SFT_SOURCES, build_sft_sample
from refinery.storage import Storage
from resources import build_resources

SFT_CHAIN = [raw_sft, sft_checked, sft_selected]
STAGES = ["raw_sft", "sft_checked", "sft_selected"]


def resources(layout) -> dict:
    return build_resources("local", home=str(layout.home), device="cpu", batch_size=32)


def materialize(instance, layout, source, select_config=None) -> dg.ExecuteInProcessResult:
    if source not in instance.get_dynamic_partitions("sft_source"):
        instance.add_dynamic_partitions("sft_source", [source])
    config = {"ops": {"sft_selected": {"config": select_config}}} if select_config else None
    return dg.materialize(
        SFT_CHAIN, partition_key=source, instance=instance, resources=resources(layout), run_config=config
    )


def metadata(result, asset):
    return next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == asset
    )


BUDGET = {"budget_count": 10, "allocation": "uniform"}


@pytest.fixture(scope="module")
def sft_home(tmp_path_factory):
    """One materialization of every sample source, shared by the tests of this module (they only
    read it, except the last, which adds a source and re-runs one)."""
    layout = Layout.at(tmp_path_factory.mktemp("sft") / "home")
    build_sft_sample(layout.inbox_kind("sft"), seed=3, records_per_source=24)
    with dg.instance_for_test() as instance:
        results = {s: materialize(instance, layout, s, BUDGET) for s in SFT_SOURCES}
        yield layout, instance, results


@pytest.fixture
def sft_run(sft_home):
    return sft_home[2]


@pytest.fixture
def home(sft_home):
    return sft_home[0]


def test_chain_accounts_for_every_record(home, sft_run):
    storage = Storage(home.storage)
    for source, result in sft_run.items():
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3 * len(STAGES) and all(c.passed for c in checks), source
        for upstream, stage in itertools.pairwise(STAGES):
            out, rejected = storage.row_count(stage, source), storage.row_count(stage, source, rejected=True)
            assert storage.row_count(upstream, source) == out + rejected
        raw = storage.read("raw_sft", source)
        assert raw["prompt"].str.strip().str.len().min() > 0
        kinds = set(raw["kind"])
        assert (
            kinds
            == {
                "alpaca": {"instruction"},
                "chat": {"conversation"},
                "preference": {"preference"},
                "ranked": {"ranked"},
            }[source]
        )


def test_quarantine_rules_and_dedup_reasons(home, sft_run):
    storage = Storage(home.storage)
    quarantine = storage.read("raw_sft", "chat", rejected=True)
    assert set(quarantine["reason"]) == {
        "unknown_role",
        "malformed_conversation",
        "unsupported_content",
        "duplicate_id",
        "undecodable_bytes",
    }
    assert quarantine["raw"].notna().all() and quarantine["line"].notna().all()
    alpaca_q = storage.read("raw_sft", "alpaca", rejected=True)
    assert "unsupported_file_type" in set(alpaca_q["reason"]) and "missing_field" in set(alpaca_q["reason"])

    checked = storage.read("sft_checked", "alpaca", rejected=True).set_index("reason")
    for code in (
        "empty_response",
        "truncated_response",
        "response_copies_prompt",
        "refusal",
        "language.not_english",
        "prompt_too_long",
        "exact_duplicate",
        "near_duplicate",
    ):
        assert code in checked.index, code
    raw = storage.read("raw_sft", "alpaca").set_index("id")
    dup_of = checked.loc["exact_duplicate", "duplicate_of"]
    assert dup_of.startswith("alpaca/") and raw.loc[dup_of.split("/", 1)[1], "prompt"]
    assert checked.loc["near_duplicate", "similarity"] >= 0.8

    pref = storage.read("sft_checked", "preference", rejected=True)
    assert {"preference.identical", "refusal", "empty_response", "exact_duplicate"} <= set(pref["reason"])
    ranked = storage.read("sft_checked", "ranked", rejected=True)
    assert {"ranked.tied_scores", "empty_response"} <= set(ranked["reason"])


def test_selection_budget_coverage_and_plot(home, sft_run):
    storage = Storage(home.storage)
    for source, result in sft_run.items():
        meta = metadata(result, "sft_selected")
        selected = storage.read("sft_selected", source)
        dropped = storage.read("sft_selected", source, rejected=True)
        assert len(selected) == meta["budget"].value == min(10, storage.row_count("sft_checked", source))
        clusters = meta["clusters"].value
        assert meta["coverage"].value == 1.0 and meta["clusters_represented"].value == clusters
        assert set(selected["cluster"]) == set(range(clusters))  # every cluster kept something
        assert set(dropped["reason"]) <= {"not_selected"}
        assert (
            meta["projection"].value.startswith("![") and "data:image/png;base64," in meta["projection"].value
        )
        assert len(meta["projection"].value) < 60_000
        assert "typical prompt" in meta["per_cluster"].value
    stats = json.loads(storage.stats_path("sft_selected", "alpaca").read_text())
    assert sum(stats["cluster_taken"]) == 10 and min(stats["cluster_taken"]) >= 1
    # each record's decision read once, beside its row (streamed from the per-slice files)
    assert stats["selection_decisions_read"] == storage.row_count("sft_checked", "alpaca")


def test_prompt_dedup_across_sources_and_rematerialization(sft_home):
    home, instance, _ = sft_home
    storage = Storage(home.storage)
    alpaca = storage.read("sft_checked", "alpaca")
    copied = alpaca.iloc[0]
    folder = home.inbox_source("sft", "later")
    folder.mkdir(parents=True)
    records = [
        {"instruction": copied["prompt"], "output": "A different answer, written again."},  # dup of alpaca
        {"prompt": copied["prompt"], "chosen": "Yes, this one.", "rejected": "No."},  # other group: kept
    ]
    (folder / "new.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert materialize(instance, home, "later").success
    rejected = storage.read("sft_checked", "later", rejected=True)
    assert rejected["duplicate_of"].tolist() == [f"alpaca/{copied['id']}"]
    assert storage.read("sft_checked", "later")["kind"].tolist() == ["preference"]

    before = {s: storage.path(s, "alpaca").read_bytes() for s in STAGES}
    assert materialize(instance, home, "alpaca", BUDGET).success
    assert {s: storage.path(s, "alpaca").read_bytes() for s in STAGES} == before  # claims kept, same output
    assert pq.read_schema(storage.path("sft_selected", "alpaca")).metadata[b"refinery"]
