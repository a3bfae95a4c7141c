"""The one Dagster ``Definitions`` of Refinery (loaded by workspace.yaml and ``-m definitions``).

Resources and the executor come from ``resources.environments`` for ``$REFINERY_ENVIRONMENT``
(``local`` by default: in-process steps, local index files; ``cluster``: a process per step,
Redis-backed dedup indexes shared by many machines).

What this module loads and builds lives as long as the process, so it is built with the garbage
collector off and then frozen out of its scans, and so is everything alive at exit
(``refinery.process_heap``: 1.1–1.9 CPU s of a CLI run were collections of these objects).
"""

import dagster as dg

from refinery.process_heap import freeze_at_exit, loading_frozen

with loading_frozen():
    from assets import ALL_ASSETS
    from assets.jobs import ALL_JOBS
    from refinery_cli.progress import LOGGERS
    from resources import build_executor, build_resources
    from sensors import ALL_SENSORS

    defs = dg.Definitions(
        assets=ALL_ASSETS,
        jobs=ALL_JOBS,
        sensors=ALL_SENSORS,
        resources=build_resources(),
        executor=build_executor(),
        loggers=LOGGERS,
    )

freeze_at_exit()
