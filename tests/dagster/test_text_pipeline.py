"""The real text chain under materialize(): outputs, reasons, checks, metadata, determinism,
changed input, empty partitions, and the Redis index backend."""

import hashlib
import itertools
import logging
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest

from refinery.dedup.backends import open_exact_index
from refinery.paths import Layout
from refinery.sql import connect
from refinery.storage import Storage
from resources import DedupIndexResource
from tests.conftest import write_source
from tests.dagster.conftest import (
    ALPHA,
    BETA_OWN,
    build_inbox,
    jsonl,
    materialize_report,
    materialize_source,
)

# The rule-based half; the model-based stages are tested with trained models in test_text_quality_assets.
TEXT_STAGES = [
    "raw_documents",
    "clean_documents",
    "heuristic_filtered",
    "exact_deduplicated",
    "fuzzy_deduplicated",
]
FINAL = TEXT_STAGES[-1]
OTHER_LANGUAGES = "multilingual_filtered"  # beside heuristic_filtered: every language but English


def file_digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def stage_counts(storage: Storage, source: str) -> dict:
    return {
        s: (storage.row_count(s, source), storage.row_count(s, source, rejected=True)) for s in TEXT_STAGES
    }


def rejected(storage, asset, source):
    return storage.read(asset, source, rejected=True)


@pytest.fixture(scope="module")
def alpha_beta_once(tmp_path_factory):
    """alpha, then beta, through the rule-based chain once per module (the costliest part of these
    tests); each test below works on a copy of that home (:func:`run_alpha_beta`)."""
    layout = Layout.at(tmp_path_factory.mktemp("alpha-beta") / "home")
    layout.inbox_kind("text").mkdir(parents=True)
    lines = build_inbox(layout)
    with dg.instance_for_test() as instance:
        results = {s: materialize_source(instance, layout, s) for s in ("alpha", "beta")}
    return layout, lines, results


@pytest.fixture
def run_alpha_beta(home, instance, alpha_beta_once):
    """This test's home holds alpha and beta as the chain left them (inbox, outputs and the local
    dedup index, copied: a test may change them), its instance knows both partitions."""
    layout, lines, results = alpha_beta_once
    shutil.copytree(layout.home, home.home, dirs_exist_ok=True)
    instance.add_dynamic_partitions("text_source", ["alpha", "beta"])
    return lines, results


def test_chain_outputs_reasons_and_accounting(home, instance, run_alpha_beta):
    lines, results = run_alpha_beta
    storage = Storage(home.storage)
    for source, result in results.items():
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert len(checks) == 3 * (len(TEXT_STAGES) + 1) and all(c.passed for c in checks)
        counts = stage_counts(storage, source)
        other = (storage.row_count(OTHER_LANGUAGES, source), storage.row_count(OTHER_LANGUAGES, source, True))
        assert sum(counts["raw_documents"]) == lines[source]  # every input line is a row somewhere
        for upstream, stage in itertools.pairwise(TEXT_STAGES):
            routed = sum(other) if stage == "heuristic_filtered" else 0  # the other languages' share
            assert counts[upstream][0] == sum(counts[stage]) + routed  # rows in = out + rejected

    quarantine = rejected(storage, "raw_documents", "alpha")
    assert sorted(quarantine["reason"]) == [
        "empty_text",
        "malformed_json",
        "missing_text",
        "undecodable_bytes",
    ]
    assert quarantine["line"].min() > len(ALPHA)  # the bad lines are the last ones, and say so

    clean = storage.read("clean_documents", "alpha").set_index("id")
    assert clean.loc["pii", ["pii_email", "pii_phone", "pii_ip", "pii_credit_card"]].tolist() == [1, 1, 1, 1]
    assert "<EMAIL>" in clean.loc["pii", "text"]

    heuristic = rejected(storage, "heuristic_filtered", "alpha").set_index("id")
    assert heuristic.loc["spam", "reason"].startswith(("gopher_quality.", "gopher_repetition."))
    assert heuristic.loc["boiler", "reason"].startswith("gopher_quality.")
    assert "french" not in heuristic.index  # routed, not rejected: kept with the French rule set
    assert "french" not in set(storage.read("heuristic_filtered", "alpha")["id"])
    french = storage.read(OTHER_LANGUAGES, "alpha").set_index("id")
    assert french.index.tolist() == ["french"]
    assert french.loc["french", ["language", "rule_set"]].tolist() == ["fr", "fr"]
    assert set(storage.read("heuristic_filtered", "alpha")["rule_set"]) == {"en"}

    exact = rejected(storage, "exact_deduplicated", "beta")
    assert sorted(exact["duplicate_of"]) == ["alpha/a1", "alpha/a2"]  # verbatim and case/punctuation variant
    fuzzy = rejected(storage, "fuzzy_deduplicated", "beta")
    assert fuzzy["duplicate_of"].tolist() == ["alpha/a3"] and fuzzy["similarity"].iloc[0] >= 0.8
    final = storage.read(FINAL, "beta")
    assert len(final) == len(BETA_OWN)
    assert set(storage.read(FINAL, "alpha")["id"]) == {f"a{i}" for i in range(len(ALPHA))} | {"pii"}


def test_metadata_a_user_checks_first(run_alpha_beta):
    _, results = run_alpha_beta
    events = {
        e.asset_key.to_user_string(): e.metadata
        for e in results["alpha"].get_asset_materialization_events()
        for e in [e.materialization]
    }
    meta = events["heuristic_filtered"]
    for key in (
        "rows_in",
        "rows_out",
        "rows_rejected",
        "removed_by_reason",
        "seconds",
        "parameters",
        "sample_kept",
        "sample_rejected",
        "distribution_word_count",
        "assumptions",
        "dagster/row_count",
    ):
        assert key in meta, key
    assert meta["rows_routed_elsewhere"].value == 1  # the French article
    assert events["multilingual_filtered"]["rows_in"].value == 1
    assert "| fr | fr | 1 | 1 |" in events["multilingual_filtered"]["languages"].value
    assert meta["parameters"].value["min_doc_words"] == 50
    assert events["raw_documents"]["rows_rejected"].value == 4
    assert "lsh_bands" in events["fuzzy_deduplicated"]


def data_versions(result) -> dict[str, str]:
    """Each asset's data version as Dagster recorded it for this run's materialization."""
    return {
        e.asset_key.to_user_string(): e.materialization.tags["dagster/data_version"]
        for e in result.get_asset_materialization_events()
    }


def test_rematerializing_unchanged_input_is_byte_identical(home, instance, run_alpha_beta):
    storage = Storage(home.storage)
    stages = [*TEXT_STAGES, OTHER_LANGUAGES]
    before = {s: file_digest(storage.path(s, "alpha")) for s in stages}
    before_rej = {s: file_digest(storage.rejected_path(s, "alpha")) for s in stages}
    again = materialize_source(instance, home, "alpha")
    assert again.success  # after beta: alpha keeps its claims
    assert {s: file_digest(storage.path(s, "alpha")) for s in stages} == before
    assert {s: file_digest(storage.rejected_path(s, "alpha")) for s in stages} == before_rej
    # The output's hash is its data version: the same rows again, the same version (no clocks, no run id).
    first = data_versions(run_alpha_beta[1]["alpha"])
    assert set(first) >= set(stages) and data_versions(again) == first


def test_changed_input_replaces_contribution(home, instance, run_alpha_beta):
    storage = Storage(home.storage)
    index = open_exact_index("local", home, "", "refinery")
    before = index.count()
    index.close()
    # a1 leaves alpha (beta's copy of it was dropped in a1's favour); a new article arrives.
    kept = [{"id": f"a{i}", "text": t} for i, t in enumerate(ALPHA) if i != 1]
    (home.inbox_source("text", "alpha") / "docs.jsonl").write_bytes(
        jsonl([*kept, {"id": "new", "text": BETA_OWN[0] + " Fresh."}])
    )
    result = materialize_source(instance, home, "alpha")
    assert result.success
    changed, first = data_versions(result), data_versions(run_alpha_beta[1]["alpha"])
    assert all(changed[s] != first[s] for s in TEXT_STAGES)  # new rows, new versions
    meta = next(
        e.materialization.metadata
        for e in result.get_asset_materialization_events()
        if e.asset_key.to_user_string() == "exact_deduplicated"
    )
    assert meta["claims_withdrawn"].value == 2  # a1 and pii left alpha
    assert (
        "alpha/a1" in meta["claims_withdrawn_sample"].value
        and "alpha/pii" in meta["claims_withdrawn_sample"].value
    )
    index = open_exact_index("local", home, "", "refinery")
    after = index.count()
    index.close()
    assert after == before - 2 + 1  # two claims withdrawn, "new" claimed, nothing counted twice
    # beta is stale for its copy of a1; re-running it restores that copy.
    assert materialize_source(instance, home, "beta").success
    assert "alpha/a1" not in set(rejected(storage, "exact_deduplicated", "beta")["duplicate_of"])


def test_empty_partition_materializes_empty_outputs(home, instance):
    build_inbox(home)
    result = materialize_source(instance, home, "empty")
    assert result.success and all(c.passed for c in result.get_asset_check_evaluations())
    storage = Storage(home.storage)
    for stage in TEXT_STAGES:
        assert storage.row_count(stage, "empty") == 0
        assert "id" in pq.read_schema(storage.path(stage, "empty")).names


def test_missing_source_folder_is_an_empty_partition_with_a_warning(home, instance):
    result = materialize_source(instance, home, "ghost")
    assert result.success
    assert Storage(home.storage).row_count(FINAL, "ghost") == 0
    folder = home.inbox_source("text", "ghost")
    warnings = [
        (e.step_key, e.user_message) for e in instance.all_logs(result.run_id) if e.level == logging.WARNING
    ]
    assert warnings == [("raw_documents", f"inbox folder {folder} does not exist: empty partition")]


def test_report_and_sql_over_all_sources(home, instance, run_alpha_beta):
    result = materialize_report(instance, home)
    assert result.success
    meta = result.get_asset_materialization_events()[0].materialization.metadata
    storage = Storage(home.storage)
    assert meta["sources"].value == 2
    assert meta["final_documents"].value == 0  # only the rule-based half ran: no pretrain_corpus yet
    assert "near_duplicate" in meta["report"].value and (home.reports / "catalog.duckdb").exists()
    # The funnel closes with the routing: heuristic_filtered took all but the French article, which
    # multilingual_filtered took (only alpha has one).
    report = meta["report"].value
    assert "| stage | rows in | rows out | rejected | routed elsewhere | tokens out |" in report
    cells: dict[str, list[str]] = {}
    for row in report.splitlines():  # the stage table comes first (the reasons table repeats names)
        if row.startswith(("| heuristic_filtered |", "| multilingual_filtered |")):
            cells.setdefault(
                row.split("|")[1].strip(), [c.strip().replace(",", "") for c in row.split("|")[2:6]]
            )
    main_in = storage.row_count("heuristic_filtered", "alpha") + storage.row_count(
        "heuristic_filtered", "beta"
    )
    main_in += len(rejected(storage, "heuristic_filtered", "alpha")) + len(
        rejected(storage, "heuristic_filtered", "beta")
    )
    assert cells["heuristic_filtered"][0] == str(main_in) and cells["heuristic_filtered"][3] == "1"
    assert cells["multilingual_filtered"] == ["1", "1", "0", str(main_in)]  # in, out, rejected, routed
    con = connect(home.storage)
    rows = dict(con.execute("SELECT source, count(*) FROM fuzzy_deduplicated GROUP BY 1").fetchall())
    assert rows == {
        "alpha": storage.row_count(FINAL, "alpha"),
        "beta": storage.row_count(FINAL, "beta"),
    }
    reasons = dict(
        con.execute("SELECT reason, count(*) FROM rejected_exact_deduplicated GROUP BY 1").fetchall()
    )
    assert reasons == {"exact_duplicate": 2}


def test_redis_backend_makes_the_same_decisions(home, instance, redis_clean, tmp_path):
    build_inbox(home)
    redis_home = Layout.at(tmp_path / "redis-home")
    for source in ("alpha", "beta"):
        src = home.inbox_source("text", source)
        write_source(redis_home, source, {p.name: p.read_bytes() for p in src.iterdir()})
    redis = DedupIndexResource(backend="redis", redis_url=redis_clean, namespace="t")
    for source in ("alpha", "beta"):
        assert materialize_source(instance, home, source).success
        assert materialize_source(instance, redis_home, source, redis).success
    local, remote = Storage(home.storage), Storage(redis_home.storage)
    for stage in ("exact_deduplicated", "fuzzy_deduplicated"):
        for source in ("alpha", "beta"):
            assert file_digest(local.path(stage, source)) == file_digest(remote.path(stage, source))
    assert not (redis_home.index / "exact.sqlite").exists()  # nothing went to local files
