"""The one Dagster ``Definitions`` of Refinery (loaded by workspace.yaml and ``-m definitions``)."""

import dagster as dg

from assets import ALL_ASSETS
from resources import DedupIndexResource, RefineryHome
from sensors import ALL_JOBS, ALL_SCHEDULES, ALL_SENSORS

RESOURCES = {
    "refinery": RefineryHome(home=dg.EnvVar("REFINERY_HOME").get_value("") or ""),
    "dedup_index": DedupIndexResource(),
}

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    sensors=ALL_SENSORS,
    schedules=ALL_SCHEDULES,
    resources=RESOURCES,
)
