"""The automation sensor: evaluates every asset's automation condition (assets/automation.py).

It is Dagster's default automation sensor under its usual name, declared here so its interval is a
setting: ``$REFINERY_AUTOMATION_INTERVAL`` seconds between evaluations (default 30). Turn it on in
the UI's Automation tab, with the inbox sensors.
"""

import os

import dagster as dg

INTERVAL_ENV = "REFINERY_AUTOMATION_INTERVAL"

automation_sensor = dg.AutomationConditionSensorDefinition(
    "default_automation_condition_sensor",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=int(os.environ.get(INTERVAL_ENV) or 30),
    description="Evaluates the automation conditions of every asset: stages follow their upstream "
    "partitions, models retrain on their cron or a changed reference corpus, the cross-source tables "
    "refresh at most once per interval.",
)
