"""The one Dagster ``Definitions`` of Refinery (loaded by workspace.yaml and ``-m definitions``)."""

import dagster as dg

from assets import ALL_ASSETS
from resources import (
    ClipResource,
    ComputeResource,
    DedupIndexResource,
    EmbedderResource,
    KenLMResource,
    QualityClassifierResource,
    RefineryHome,
)
from sensors import ALL_JOBS, ALL_SCHEDULES, ALL_SENSORS

COMPUTE = ComputeResource()  # one device setting shared by every model resource

RESOURCES = {
    "refinery": RefineryHome(home=dg.EnvVar("REFINERY_HOME").get_value("") or ""),
    "dedup_index": DedupIndexResource(),
    "compute": COMPUTE,
    "embedder": EmbedderResource(compute=COMPUTE),
    "kenlm": KenLMResource(),
    "quality_model": QualityClassifierResource(),
    "clip": ClipResource(compute=COMPUTE),
}

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=ALL_JOBS,
    sensors=ALL_SENSORS,
    schedules=ALL_SCHEDULES,
    resources=RESOURCES,
)
