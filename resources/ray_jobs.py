"""A heavy step submitted as a Ray job on an existing cluster, its results back through Dagster Pipes.

Why: with ``engine: {kind: ray}`` the Dagster step attaches to the cluster as a Ray *driver*, so the
step's machine must reach the head's GCS port and stay up for the whole run. Submitted as a **Ray
job** (dagster-ray's :class:`~dagster_ray.PipesRayJobClient`, over the dashboard's HTTP job API),
the driver runs on the cluster's head: the Dagster step only submits, tails the job's log and turns
the Pipes messages in it into the asset's materialization (metadata, data version) and check
results. Cancelling the Dagster run stops the job.

Two sides live here:

- :func:`submit_corpus_dedup` (the Dagster step): the library's inputs (storage root, sources,
  parameters, provenance stamp, engine settings) go to the job as Pipes *extras*;
- :func:`main` (the job, ``python -m resources.ray_jobs``): opens the Pipes context, runs
  :func:`refinery.dedup.corpus_publish.publish_corpus_dedup` with the Ray engine attached to the
  cluster it runs on, and reports what the in-process step would return: every metadata entry,
  the row count and column schema, the manifest's hash as the data version, and each check.

The cluster needs Refinery importable on the head and workers (the same image as the Dagster code
location, or ``ray_job_env: {PYTHONPATH: ...}``) and the storage root mounted at the same path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from refinery.metadata import CheckOutcome, FilePath, Json, Markdown, Published

JOB_MODULE = "resources.ray_jobs"
CORPUS_FUZZY_DEDUP_JOB = "corpus_fuzzy_dedup"


# --- the job's side ---------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-ready copy (NumPy scalars and arrays, tuples, non-finite floats as strings)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def pipes_value(value: Any) -> dict:
    """One library metadata value as a Pipes metadata entry ({raw_value, type}), typed as
    ``assets.factory.metadata_value`` types it in the step, so both paths render alike."""
    import pyarrow as pa

    if isinstance(value, Markdown):
        return {"raw_value": value.text, "type": "md"}
    if isinstance(value, Json):
        return {"raw_value": _plain(value.value), "type": "json"}
    if isinstance(value, FilePath):
        return {"raw_value": value.path, "type": "path"}
    if isinstance(value, pa.Schema):
        columns = [{"name": f.name, "type": str(f.type)} for f in value]
        return {"raw_value": {"columns": columns}, "type": "table_schema"}
    value = _plain(value)
    if isinstance(value, bool):
        return {"raw_value": value, "type": "bool"}
    if isinstance(value, int):
        return {"raw_value": value, "type": "int"}
    if isinstance(value, float):
        return {"raw_value": value, "type": "float"}
    if isinstance(value, str):
        return {"raw_value": value, "type": "text"}
    return {"raw_value": value, "type": "json"}


def pipes_metadata(values: Mapping[str, Any]) -> dict[str, dict]:
    return {key: pipes_value(v) for key, v in values.items()}


def report_published(pipes: Any, published: Published, data_version: str) -> None:
    """What the in-process step returns, sent through Pipes: log lines, the materialization (with
    Dagster's row-count and column-schema entries) and every check."""
    for line in published.info:
        pipes.log.info(line)
    for line in published.warnings:
        pipes.log.warning(line)
    head: dict[str, Any] = {}
    if published.rows is not None:
        head["dagster/row_count"] = int(published.rows)
    if published.schema is not None:
        head["dagster/column_schema"] = published.schema
    pipes.report_asset_materialization(
        metadata=pipes_metadata({**head, **published.metadata}), data_version=data_version
    )
    for outcome in published.checks:
        report_check(pipes, outcome)


def report_check(pipes: Any, outcome: CheckOutcome) -> None:
    pipes.report_asset_check(
        check_name=outcome.name, passed=bool(outcome.passed), metadata=pipes_metadata(outcome.metadata)
    )


def run_corpus_dedup_job(pipes: Any) -> None:
    """corpus_fuzzy_dedup inside the Ray job: the library on the Ray engine attached to this
    cluster (``address: auto``, which the job's driver gets from Ray), then Pipes reports."""
    from refinery.dedup.corpus_publish import CorpusFuzzyDedupParams, publish_corpus_dedup
    from refinery.engine.ray_engine import RayEngine
    from refinery.object_storage import open_storage

    extras = pipes.extras
    engine_settings = extras.get("engine") or {}
    engine = RayEngine(
        address="auto",
        workers=engine_settings.get("workers"),
        slice_rows=int(engine_settings.get("slice_rows", 20_000)),
        node_ip_address=engine_settings.get("node_ip_address"),
    )
    params = CorpusFuzzyDedupParams.model_validate(extras["params"])
    pipes.log.info(
        f"corpus_fuzzy_dedup as a Ray job: {len(extras['sources'])} sources, storage {extras['storage']}"
    )
    published = publish_corpus_dedup(
        open_storage(extras["storage"]), params, engine, extras["stamp"], list(extras["sources"])
    )
    version = published.metadata["manifest"].value["version"]
    report_published(pipes, published, version)


JOBS = {CORPUS_FUZZY_DEDUP_JOB: run_corpus_dedup_job}


def main() -> None:
    """The Ray job's entrypoint: the Pipes context from the environment dagster-ray injected."""
    from dagster_pipes import open_dagster_pipes

    with open_dagster_pipes() as pipes:
        job = pipes.extras.get("job")
        if job not in JOBS:
            raise ValueError(f"unknown Refinery Ray job {job!r}; known: {sorted(JOBS)}")
        JOBS[job](pipes)


# --- the Dagster step's side ------------------------------------------------------------------------


def submit_corpus_dedup(
    context: Any,
    dashboard: str,
    python: str,
    env: Mapping[str, str],
    extras: dict,
    poll_interval_s: float = 1.0,
) -> Any:
    """Submit corpus_fuzzy_dedup to the Ray job server at ``dashboard`` and wait; returns the
    ``MaterializeResult`` built from the job's Pipes messages (metadata, data version, checks,
    plus the Ray job id). A job that fails raises with Ray's message; a cancelled run stops it."""
    from dagster_ray import PipesRayJobClient

    client = PipesRayJobClient(address=dashboard, poll_interval=poll_interval_s, forward_termination=True)
    # Pipes' context travels in an environment variable: keep the extras JSON-plain.
    extras = json.loads(json.dumps(_plain({**extras, "job": CORPUS_FUZZY_DEDUP_JOB})))
    invocation = client.run(
        context=context,
        submit_job_params={
            "entrypoint": f"{python} -m {JOB_MODULE}",
            "runtime_env": {"env_vars": dict(env)},
            "entrypoint_num_cpus": 0,
        },
        extras=extras,
    )
    return invocation.get_materialize_result()


if __name__ == "__main__":
    main()
