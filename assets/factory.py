"""The stage factory: a library stage spec plus a processor maker become one Dagster asset.

Every partitioned stage of every inbox kind is built here, so each gets the same partitions,
group, kinds, ``deps`` (from the spec's upstream), ``Config`` class (the spec's parameter model),
invariant checks, and metadata. The asset body only builds the library's ``StageContext`` from the
Dagster context and converts what the library returns (:mod:`refinery.metadata` values) into
Dagster's metadata and check results.

No ``from __future__ import annotations`` here: Dagster reads the asset functions' annotations,
and the ``Config`` class of each asset is made at run time.
"""

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import dagster as dg
import pyarrow as pa
from pydantic import BaseModel

from assets import stage_defaults
from assets.automation import STAGE
from assets.gpu import gpu_asset_kwargs
from assets.partitions import partitions_of
from refinery.kernel.checks import INVARIANT_CHECKS, invariant_descriptions
from refinery.kernel.collector import RowCollector
from refinery.kernel.execute import StageOutcome, execute_ingest, execute_stage
from refinery.kernel.report import provenance
from refinery.kernel.spec import ProcessorMaker, StageContext, StageLog, StageResources, StageSpec
from refinery.kinds import KINDS
from refinery.metadata import CheckOutcome, FilePath, Json, Markdown, Published
from refinery.storage import Storage
from resources import RefineryHome

STAGE_KINDS = frozenset({"python", "parquet"})
RETRIES = 3  # transient failures (a dropped Redis connection) retry with backoff: 2, 4, 8 seconds
# Every partitioned stage asset by name, as the factory built it (or registered beside it): the asset
# lists and jobs in assets/__init__.py follow the stage order of refinery/stages/<kind>.py from here.
STAGE_ASSETS: dict[str, dg.AssetsDefinition] = {}


class _NoParams(dg.Config):
    """Stages without parameters take no run config."""


def config_class(params: type[BaseModel] | None, asset: str | None = None) -> type[dg.Config]:
    """The run-config class of a parameter model: the model itself, as a Dagster ``Config``, so
    an asset's config *is* its library parameters (no copying field by field). With ``asset``, the
    deployment's own defaults for it from ``$REFINERY_STAGE_DEFAULTS`` (assets/stage_defaults.py)."""
    if params is None:
        return _NoParams
    config = type(
        params.__name__.removesuffix("Params") + "Config", (dg.Config, params), {"__doc__": params.__doc__}
    )
    return config if asset is None else stage_defaults.with_defaults(config, params, asset)


def library_params(params: type[BaseModel] | None, config: dg.Config) -> BaseModel | None:
    """The run config as the library's own parameter model. The config class is made at import
    time and standard pickle cannot find it by name, so a value holding it could not travel to a
    stage's worker processes (forkserver or spawned DataLoader workers); the library's class can."""
    return None if params is None else params.model_validate(config.model_dump())


def metadata_value(value: Any) -> Any:
    """One library value as Dagster metadata (scalars pass through)."""
    if isinstance(value, Markdown):
        return dg.MetadataValue.md(value.text)
    if isinstance(value, Json):
        return dg.MetadataValue.json(value.value)
    if isinstance(value, FilePath):
        return dg.MetadataValue.path(value.path)
    if isinstance(value, pa.Schema):
        return column_schema(value)
    return value


def to_metadata(values: Mapping[str, Any]) -> dict[str, Any]:
    return {key: metadata_value(v) for key, v in values.items()}


def to_check_results(outcomes: Iterable[CheckOutcome]) -> list[dg.AssetCheckResult]:
    return [
        dg.AssetCheckResult(check_name=o.name, passed=bool(o.passed), metadata=to_metadata(o.metadata))
        for o in outcomes
    ]


def column_schema(schema: pa.Schema) -> dg.TableSchema:
    return dg.TableSchema(columns=[dg.TableColumn(f.name, str(f.type)) for f in schema])


def materialize_result(
    metadata: Mapping[str, Any],
    checks: Iterable[CheckOutcome] = (),
    schema: pa.Schema | None = None,
    row_count: int | None = None,
    data_version: str | None = None,
) -> dg.MaterializeResult:
    """Library results as a MaterializeResult; ``schema`` and ``row_count`` fill Dagster's own
    column-schema and row-count entries, ``data_version`` (a partition's ``storage.version``) the
    version Dagster compares downstream."""
    head: dict[str, Any] = {} if row_count is None else {"dagster/row_count": row_count}
    if schema is not None:
        head["dagster/column_schema"] = column_schema(schema)
    return dg.MaterializeResult(
        metadata={**head, **to_metadata(metadata)},
        check_results=to_check_results(checks),
        data_version=None if data_version is None else dg.DataVersion(data_version),
    )


def publish(context: dg.AssetExecutionContext, published: Published) -> dg.MaterializeResult:
    """An unpartitioned asset's library result: its log lines, then its metadata and checks."""
    for line in published.info:
        context.log.info(line)
    for line in published.warnings:
        context.log.warning(line)
    return materialize_result(published.metadata, published.checks, published.schema, published.rows)


def check_specs(asset: str, text_column: str = "text") -> list[dg.AssetCheckSpec]:
    descriptions = invariant_descriptions(text_column)
    return [
        dg.AssetCheckSpec(name, asset=asset, blocking=True, description=descriptions[name])
        for name in INVARIANT_CHECKS
    ]


def stage_context(
    context: dg.AssetExecutionContext,
    spec: StageSpec,
    params: BaseModel | None,
    resource_keys: Iterable[str] = (),
) -> StageContext:
    """The library's view of one step: partition, parameters, storage, engine, resources and log."""
    refinery: RefineryHome = context.resources.refinery
    source = context.partition_key
    return StageContext(
        spec=spec,
        source=source,
        params=params,
        layout=refinery.layout(),
        storage=refinery.storage(),
        engine=context.resources.engine.engine(),
        resources=StageResources({key: getattr(context.resources, key).plain() for key in resource_keys}),
        log=StageLog(context.log),
        provenance=provenance(spec.name, source, params),
    )


def transient(err: BaseException) -> bool:
    """A failure worth retrying: a connection to a shared service (the Redis dedup index) refused,
    reset or timed out. A Ray cluster that does not answer is not retried: it is a setting."""
    import redis

    from refinery.engine.ray_engine import RayUnavailable

    if isinstance(err, RayUnavailable):
        return False
    kinds = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, ConnectionError, TimeoutError)
    return isinstance(err, kinds) or (err.__cause__ is not None and transient(err.__cause__))


def retrying(context: dg.AssetExecutionContext, step):
    """Run ``step()``; on a transient failure ask Dagster to retry the step with exponential backoff."""
    try:
        return step()
    except Exception as err:
        if transient(err) and context.retry_number < RETRIES:
            wait = 2 ** (context.retry_number + 1)
            context.log.warning(f"transient failure ({type(err).__name__}: {err}); retrying in {wait}s")
            raise dg.RetryRequested(max_retries=RETRIES, seconds_to_wait=wait) from err
        raise


def _outcome_result(outcome: StageOutcome, storage: Storage) -> dg.MaterializeResult:
    """The step's result; the output's hash is its data version (``storage.version``)."""
    run = outcome.run
    head = {"dagster/row_count": run.stats.rows_out, "dagster/column_schema": column_schema(run.schema)}
    return dg.MaterializeResult(
        metadata={**head, **to_metadata(outcome.metadata)},
        check_results=to_check_results(outcome.checks),
        data_version=dg.DataVersion(storage.version(run.asset, run.partition)),
    )


def _asset_args(
    spec: StageSpec, resources: Iterable[str], pool: str | None, gpu: bool, automatic: bool = True
) -> dict:
    args: dict[str, Any] = {
        "name": spec.name,
        "partitions_def": partitions_of(spec.kind),
        "group_name": KINDS[spec.kind].group,
        "kinds": {*STAGE_KINDS, *spec.kinds},
        "check_specs": check_specs(spec.name, spec.text_column),
        "description": spec.description,
        "required_resource_keys": {"refinery", *resources},
    }
    if spec.deps:
        args["deps"] = spec.deps
    if automatic:  # refreshed when its upstream partition updates (assets/automation.py)
        args["automation_condition"] = STAGE
    if gpu:
        args.update(gpu_asset_kwargs())
    if pool is not None:
        args["pool"] = pool
    return args


def stage_asset(
    spec: StageSpec,
    make: ProcessorMaker,
    *,
    resources: Iterable[str] = (),
    pool: str | None = None,
    gpu: bool = False,
    automatic: bool = True,
    execute: Callable[[StageContext, ProcessorMaker, float], StageOutcome] = execute_stage,
) -> dg.AssetsDefinition:
    """The asset of a partitioned stage: ``make(ctx)`` gives the batch processor for a partition
    (or a context manager yielding it). ``resources`` names the resources ``make`` reads from
    ``ctx.resources`` (each handed over as its ``plain()`` library value: resources/__init__.py);
    ``pool`` and ``gpu`` place the step (see assets/gpu.py); ``automatic=False``
    leaves it out of the automation that follows upstream updates. ``execute`` runs the stage
    (a model stage's runs it on a Ray actor pool: refinery.engine.model_stages)."""
    config_type = config_class(spec.params, spec.name)
    resources = tuple(resources)

    @dg.asset(**_asset_args(spec, [*resources, "engine", "compute"], pool, gpu, automatic))
    def _stage(context: dg.AssetExecutionContext, config: config_type) -> dg.MaterializeResult:
        params = library_params(spec.params, config)
        gpus = context.resources.compute.num_gpus if gpu else 0
        ctx = stage_context(context, spec, params, resources)
        return _outcome_result(retrying(context, lambda: execute(ctx, make, gpus)), ctx.storage)

    return register(spec.name, _stage)


def ingest_asset(
    spec: StageSpec, reader: type[RowCollector], *, resources: Iterable[str] = ()
) -> dg.AssetsDefinition:
    """The asset that parses ``inbox/<kind>/<source>/`` with ``reader(folder, source, params)``
    (in the step, or on the engine's workers for a reader whose files read on their own); its kind's
    inbox sensor requests it when the folder's files change."""
    config_type = config_class(spec.params, spec.name)

    # On a distributed engine (ray) the inbox is read by its workers, one task per file or JSONL byte
    # range (refinery.kernel.ingest_tasks); an unreachable cluster fails the run before anything is written.
    # A transient failure (a refused or reset connection: `transient`) is retried; on the ray engine
    # the retry reads only the pieces the failed attempt did not finish (refinery.kernel.ingest_resume).
    @dg.asset(**_asset_args(spec, [*resources, "engine"], None, False, automatic=False))
    def _ingest(context: dg.AssetExecutionContext, config: config_type) -> dg.MaterializeResult:
        params = library_params(spec.params, config)
        ctx = stage_context(context, spec, params)
        folder = ctx.layout.inbox_source(spec.kind, ctx.source)
        outcome = retrying(context, lambda: execute_ingest(ctx, reader(folder, ctx.source, params)))
        return _outcome_result(outcome, ctx.storage)

    return register(spec.name, _ingest)


def register(name: str, asset: dg.AssetsDefinition) -> dg.AssetsDefinition:
    """Record a stage's asset under its spec's name (the factory does it for the stages it builds;
    an asset written by hand in a pipeline's order, like document_embeddings, registers itself)."""
    STAGE_ASSETS[name] = asset
    return asset
