"""document_embeddings: one sentence embedding per document, stored for reuse (GPU-capable).

It runs in the ``gpu`` pool with the Kubernetes tags that request one GPU (assets/gpu.py); on a
machine without one it runs on the CPU (the compute resource's ``device: auto``). Semantic dedup,
SFT selection and mixing read the stored vectors instead of embedding again.
"""

import dagster as dg

from assets.automation import STAGE
from assets.factory import config_class, materialize_result, register
from assets.gpu import gpu_asset_kwargs
from assets.partitions import text_source
from refinery import names
from refinery.kernel.report import provenance
from refinery.metadata import Json
from refinery.quality.embeddings import (
    EMBEDDING_CHECKS,
    EmbedderInfo,
    EmbeddingParams,
    embedding_checks,
    embedding_report,
    write_embeddings,
    write_embeddings_pooled,
)
from refinery.stages import text as text_stages
from resources import EmbedderResource, EngineResource, RefineryHome

EmbeddingConfig = config_class(EmbeddingParams, names.DOCUMENT_EMBEDDINGS)


@dg.asset(
    name=names.DOCUMENT_EMBEDDINGS,
    automation_condition=STAGE,
    partitions_def=text_source,
    deps=[text_stages.DOCUMENT_EMBEDDINGS.upstream],
    group_name="text",
    kinds={"python", "parquet", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=names.DOCUMENT_EMBEDDINGS, blocking=True, description=text)
        for name, text in EMBEDDING_CHECKS.items()
    ],
    description=text_stages.DOCUMENT_EMBEDDINGS.description,
    **gpu_asset_kwargs(),
)
def document_embeddings(
    context: dg.AssetExecutionContext,
    config: EmbeddingConfig,
    refinery: RefineryHome,
    embedder: EmbedderResource,
    engine: EngineResource,
) -> dg.MaterializeResult:
    source, storage = context.partition_key, refinery.storage()
    stamp = provenance(names.DOCUMENT_EMBEDDINGS, source, config)
    params = EmbeddingParams.model_validate(config.model_dump())  # travels to the engine's workers
    runner = engine.engine()
    extra = {}
    if runner.distributed:  # a Ray actor pool: the actors load the model, this process never does
        run, model, pool = write_embeddings_pooled(
            storage,
            text_stages.DOCUMENT_EMBEDDINGS.upstream,
            source,
            embedder.plain().load,  # a plain loader: it travels to the actors
            stamp,
            params,
            runner,
            embedder.compute.model_pool(),
        )
        extra = {"engine": Json({**runner.describe(), "model_pool": pool})}
    else:
        loaded = embedder.load()
        run = write_embeddings(
            storage, text_stages.DOCUMENT_EMBEDDINGS.upstream, source, loaded, stamp, params
        )
        model = EmbedderInfo.of(loaded)
    context.log.info(
        f"{names.DOCUMENT_EMBEDDINGS}[{source}]: {run.rows} documents on {model.device} in {run.seconds:.2f}s"
    )
    return materialize_result(
        {**embedding_report(run, model, config), **extra},
        embedding_checks(storage, text_stages.DOCUMENT_EMBEDDINGS.upstream, source),
        data_version=storage.version(names.DOCUMENT_EMBEDDINGS, source),
    )


register(names.DOCUMENT_EMBEDDINGS, document_embeddings)
