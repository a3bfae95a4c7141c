"""Refreshes that flow by themselves, with the real daemon: `dagster dev` on loopback, the inbox
sensor and the automation sensor turned on through GraphQL, then a new source and a changed file.

Exactly the affected partitions, and everything downstream of them, must re-run: the changed and
the new source through every text stage, the cross-source tables once more; the other sources and
the models not at all. The final corpus and the training schedule must show the change.
"""

from __future__ import annotations

import os
import random
import time
from collections import Counter

import dagster as dg
import pandas as pd
import pytest
import yaml

from refinery import names
from refinery.sample import prose
from refinery.sample.reference_sample import build_reference_sample
from refinery.sample.target_sample import build_target_sample
from refinery.stages import text as text_stages
from refinery.storage import Storage, read_provenance
from refinery_cli import launch
from tests.conftest import write_source
from tests.dagster.conftest import build_inbox, jsonl
from tests.dagster.dev_server import dagster_dev
from tests.dagster.test_mixing_schedule_assets import DOREMI

pytestmark = pytest.mark.daemon

TEXT_STAGES = [*text_stages.TEXT_PREFILTER_STAGES, *text_stages.TEXT_QUALITY_STAGES]
TABLES = [names.DOMAIN_WEIGHTS, names.DATASET_SPLITS, names.PRETRAIN_MIXTURE, names.TRAINING_SCHEDULE]
FINAL = [(names.PRETRAIN_CORPUS, s) for s in ("alpha", "beta")] + [(names.TRAINING_SCHEDULE, None)]


def materializations(instance: dg.DagsterInstance) -> Counter:
    """(asset, partition) -> number of materializations so far."""
    counts: Counter = Counter()
    for key in instance.get_asset_keys():
        records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=key), limit=10_000).records
        for record in records:
            counts[(key.to_user_string(), record.partition_key)] += 1
    return counts


def latest(instance: dg.DagsterInstance, asset: str, partition: str | None = None) -> float:
    """When ``asset`` (``partition``) was last materialized (0 if never)."""
    event = instance.get_latest_materialization_event(dg.AssetKey(asset))
    if partition is not None:
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        return records[0].timestamp if records else 0.0
    return event.timestamp if event else 0.0


OBSERVATION = {dg.AssetKey(names.REFERENCE_CORPUS)}


def busy(instance: dg.DagsterInstance) -> bool:
    """A run is queued or running, other than the reference corpus's observation (once a minute
    here: it changes nothing while the reference stays the same, and waiting for a minute without
    one would make every wait a minute longer)."""
    active = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=active))
    return any(not (run.asset_selection and run.asset_selection <= OBSERVATION) for run in runs)


def wait_until(instance, done, seconds: float, what: str) -> None:
    """Until ``done(counts)`` holds and no run is queued or running for a few seconds."""
    deadline = time.monotonic() + seconds
    quiet_since = None
    while time.monotonic() < deadline:
        if done(materializations(instance)) and not busy(instance):
            quiet_since = quiet_since or time.monotonic()
            if time.monotonic() - quiet_since > 15:  # three sensor intervals without anything new
                return
        else:
            quiet_since = None
        time.sleep(3)
    failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    raise AssertionError(f"timed out waiting for {what}; failed runs: {[r.run_id for r in failed]}")


def test_new_and_changed_sources_flow_through_every_stage(home, tmp_path):
    rng = random.Random(404)
    build_inbox(home)
    home.inbox_source("text", "empty").rmdir()  # two sources are enough; fewer runs
    build_reference_sample(home.inbox_kind("reference"))
    build_target_sample(home.inbox_kind("target"))
    # The deployment's run-config defaults (assets/stage_defaults.py), the only config an automated
    # run gets: a small DoReMi, as test_mixing_schedule_assets uses (the default trains for about a
    # minute per refresh here, and this test is about which runs happen, not the weights).
    defaults = tmp_path / "stage_defaults.yaml"
    defaults.write_text(yaml.safe_dump({names.DOMAIN_WEIGHTS: DOREMI}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("DAGSTER_")}
    env.update(
        REFINERY_STAGE_DEFAULTS=str(defaults),
        REFINERY_HOME=str(home.home),
        DAGSTER_HOME=str(home.dagster_home),
        REFINERY_REFRESH_CRON="* * * * *",  # cross-source tables: at most once a minute here
        REFINERY_OBSERVE_CRON="* * * * *",
        REFINERY_AUTOMATION_INTERVAL="5",
        REFINERY_SENSOR_INTERVAL="5",
        OMP_NUM_THREADS="1",
    )
    saved = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home.dagster_home)
    try:
        launch.prepare_environment(home)  # the dagster.yaml `refinery init` writes
    finally:
        os.environ.pop("REFINERY_HOME", None)
        if saved is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = saved
    storage = Storage(home.storage)
    with dagster_dev(env, tmp_path / "dev.log") as server:
        for sensor in ("text_inbox_sensor", "default_automation_condition_sensor"):
            assert server.start_sensor(sensor) == "RUNNING"
        with dg.DagsterInstance.from_config(str(home.dagster_home)) as instance:
            wait_until(instance, lambda c: all(c[k] for k in FINAL), 1500, "the first full refresh")
            before = materializations(instance)
            assert before[(names.REFERENCE_LM, None)] == 1 and before[(names.QUALITY_CLASSIFIER, None)] == 1
            assert all(before[(stage, "beta")] == 1 for stage in TEXT_STAGES)

            # A new source, and one more article in a file of an existing one.
            added = {"id": "a-new", "text": prose.article(rng, "gardening", paragraphs=4)}
            gamma = [{"id": f"g{i}", "text": prose.article(rng, "astronomy", paragraphs=4)} for i in range(4)]
            alpha_file = home.inbox_source("text", "alpha") / "docs.jsonl"
            alpha_file.write_bytes(alpha_file.read_bytes() + jsonl([added]))
            write_source(home, "gamma", {"crawl.jsonl": jsonl(gamma)})

            def refreshed(counts: Counter) -> bool:
                """Both sources' corpora are new, and every table was rebuilt after both."""
                if not (
                    counts[(names.PRETRAIN_CORPUS, "gamma")] >= 1
                    and counts[(names.PRETRAIN_CORPUS, "alpha")] > before[(names.PRETRAIN_CORPUS, "alpha")]
                ):
                    return False
                corpora = max(latest(instance, names.PRETRAIN_CORPUS, s) for s in ("alpha", "gamma"))
                return all(latest(instance, t) > corpora for t in TABLES)

            wait_until(instance, refreshed, 1200, "the refresh after the change")
            after = materializations(instance)
            failed = instance.get_runs(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE]))
    # Nothing ran before its inputs existed (e.g. the tables before any source had a corpus).
    assert failed == [], [(r.run_id, sorted(str(k) for k in r.asset_selection or [])) for r in failed]
    new = after - before
    text_partitions = {p for (asset, p) in new if asset in TEXT_STAGES}
    assert text_partitions == {"alpha", "gamma"}, new
    for stage in TEXT_STAGES:  # every stage of the two affected sources, once each
        assert new[(stage, "alpha")] == 1 and new[(stage, "gamma")] == 1, (stage, new)
    assert (names.REFERENCE_LM, None) not in new and (names.QUALITY_CLASSIFIER, None) not in new
    assert all(new[(t, None)] >= 1 for t in TABLES)
    corpus = storage.read(names.PRETRAIN_CORPUS, "alpha")
    assert "a-new" in set(corpus["id"])
    splits = pd.read_parquet(storage.require_table(names.DATASET_SPLITS))
    row = splits.loc[(splits["source"] == "alpha") & (splits["id"] == "a-new")]
    assert len(row) == 1  # every corpus document is assigned a split, the new one too
    manifest = pd.read_parquet(storage.require_table(names.TRAINING_SCHEDULE))
    assert "gamma" in set(manifest["source"])
    mixture = pd.read_parquet(storage.require_table(names.PRETRAIN_MIXTURE))
    in_mixture = bool(((mixture["source"] == "alpha") & (mixture["id"] == "a-new")).any())
    in_manifest = bool(((manifest["source"] == "alpha") & (manifest["id"] == "a-new")).any())
    # The automated runs took their config from the deployment's defaults file.
    params = read_provenance(storage.require_table(names.DOMAIN_WEIGHTS))["params"]
    assert {k: params[k] for k in DOREMI} == DOREMI, params
    # Held-out splits go into the schedule whole; train documents as the mixture sampled them.
    assert in_manifest == (row["split"].iloc[0] != "train" or in_mixture)
