"""Workers of test_concurrent_dedup.py: one 'spawn' process per partition, each materializing the
real dedup assets through Dagster on one shared instance, behind a barrier so they start together.

Two ways of running, as a user would:

- ``materialize``: ``dagster.materialize`` in the worker (the in-process executor of the ``local``
  environment), with the dedup index of the test (local SQLite files, or Redis);
- ``multiprocess``: ``dagster.execute_job`` of the real ``text_prefilter`` job from
  ``definitions`` under ``REFINERY_ENVIRONMENT=cluster``: the multiprocess executor (each step in
  a process of its own) and the Redis index that environment configures.
"""

from __future__ import annotations

import os

DEDUP_STAGES = ("exact_deduplicated", "fuzzy_deduplicated")


def prefilter_job():
    """The ``text_prefilter`` job of the real definitions (for ``dagster.reconstructable``)."""
    from definitions import defs
    from refinery import names

    return defs.get_job_def(names.TEXT_PREFILTER_JOB)


def dedup_partition(barrier, mode: str, env: dict, backend: str, source: str, batch_rows: int) -> None:
    """Materialize exact_deduplicated for ``source`` when every worker is ready, then
    fuzzy_deduplicated when every worker has finished exact (so both stages race)."""
    os.environ.update(env)
    import dagster as dg

    if mode == "materialize":
        from assets import TEXT_PREFILTER
        from resources import DedupIndexResource, build_resources

        dedup = (
            DedupIndexResource(backend=backend, redis_url=env["REFINERY_REDIS_URL"])
            if backend != "local"
            else DedupIndexResource()
        )
        resources = build_resources("local", dedup_index=dedup)

        def run(stage: str) -> bool:
            return dg.materialize(
                TEXT_PREFILTER,
                selection=[stage],
                partition_key=source,
                instance=instance,
                resources=resources,
                run_config={"ops": {stage: {"config": {"batch_rows": batch_rows}}}},
                tags={"race": stage},
            ).success
    elif mode == "multiprocess":
        job = dg.reconstructable(prefilter_job)

        def run(stage: str) -> bool:
            with dg.execute_job(
                job,
                instance=instance,
                asset_selection=[dg.AssetKey(stage)],
                run_config={"ops": {stage: {"config": {"batch_rows": batch_rows}}}},
                tags={"dagster/partition": source, "race": stage},
            ) as result:
                return result.success
    else:
        raise ValueError(mode)

    with dg.DagsterInstance.get() as instance:
        for stage in DEDUP_STAGES:
            barrier.wait()
            if not run(stage):
                raise SystemExit(f"{stage} failed for {source}")
