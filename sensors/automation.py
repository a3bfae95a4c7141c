"""The automation sensor: evaluates every asset's automation condition (assets/automation.py).

It is Dagster's default automation sensor under its usual name, declared here so its interval is a
setting: ``$REFINERY_AUTOMATION_INTERVAL`` seconds between evaluations (default 30). Turn it on in
the UI's Automation tab, with the inbox sensors.
"""

import os
import warnings

import dagster as dg

INTERVAL_ENV = "REFINERY_AUTOMATION_INTERVAL"

with warnings.catch_warnings():  # include_sources is a beta parameter of Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    # Every asset and source: one sensor covers them all, so Dagster adds no default sensor of the
    # same name for the sources (the observed reference corpus).
    EVERYTHING = dg.AssetSelection.all(include_sources=True)

automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=EVERYTHING,
    minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV) or 30),
    # Runs, not backfills: a tick that requests two sources' partitions of one stage would otherwise
    # emit an asset backfill, which Dagster's backfill daemon advances one level of the graph per
    # 30-second loop (a fixed interval), so a chain of stages waited half a minute per level. Runs
    # hold each partition's whole requested chain; a stage whose upstream is in another run (a model)
    # waits for it (will_be_requested counts only within one run), and the run queue caps concurrency.
    emit_backfills=False,
    description="Evaluates the automation conditions of every asset: stages follow their upstream "
    "partitions, models retrain on their cron or a changed reference corpus, the cross-source tables "
    "refresh at most once per interval.",
)
