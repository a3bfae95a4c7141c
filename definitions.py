"""The one Dagster ``Definitions`` of Refinery (loaded by workspace.yaml and ``-m definitions``)."""

import dagster as dg

from assets import ALL_ASSETS
from resources import ComputeResource, DedupIndexResource, EmbedderResource, RefineryHome
from sensors import ALL_JOBS, ALL_SCHEDULES, ALL_SENSORS

COMPUTE = ComputeResource()  # one device setting shared by every model resource

RESOURCES = {
    "refinery": RefineryHome(home=dg.EnvVar("REFINERY_HOME").get_value("") or ""),
    "dedup_index": DedupIndexResource(),
    "embedder": EmbedderResource(compute=COMPUTE),
}

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    sensors=ALL_SENSORS,
    schedules=ALL_SCHEDULES,
    resources=RESOURCES,
)
