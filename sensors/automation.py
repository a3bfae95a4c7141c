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
    description="Evaluates the automation conditions of every asset: stages follow their upstream "
    "partitions, models retrain on their cron or a changed reference corpus, the cross-source tables "
    "refresh at most once per interval.",
)
