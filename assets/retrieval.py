"""The vector indexes over the stored embeddings (faiss HNSW), one segment per source.

``refinery search`` and ``refinery.retrieval.search_sql`` answer from them; each source's segment is
rebuilt when its embeddings change (eager) and replaced atomically.
"""

import dagster as dg

from assets.automation import STAGE
from assets.factory import config_class, materialize_result
from assets.gpu import gpu_asset_kwargs
from assets.partitions import image_text_source, text_source
from refinery import names
from refinery.kernel.report import provenance
from refinery.retrieval.clip_embeddings import write_clip_embeddings
from refinery.retrieval.index import IndexParams, index_report
from resources import RefineryHome
from resources.clip import ClipResource

SELF_RECALL = "≥ 99% of 256 sampled stored vectors find themselves through the graph."


def _index_asset(name: str, upstream: str, partitions, collections: tuple[str, ...], description: str):
    config_type = config_class(IndexParams, name)

    @dg.asset(
        name=name,
        partitions_def=partitions,
        deps=[upstream],
        group_name="retrieval",
        kinds={"python", "faiss"},
        automation_condition=STAGE,
        check_specs=[dg.AssetCheckSpec("self_recall", asset=name, blocking=True, description=SELF_RECALL)],
        description=description,
    )
    def _index(context: dg.AssetExecutionContext, config: config_type, refinery: RefineryHome):
        report, checks = index_report(
            refinery.layout(), refinery.storage(), collections, context.partition_key, config
        )
        return materialize_result(report, checks, row_count=report["vectors"])

    return _index


vector_index = _index_asset(
    names.VECTOR_INDEX,
    names.DOCUMENT_EMBEDDINGS,
    text_source,
    ("documents",),
    "HNSW (faiss) over document_embeddings[<source>] in $REFINERY_HOME/index/vectors/documents/: one "
    "segment per source, replaced atomically when the source is re-materialized. `refinery search` "
    "answers from it.",
)


@dg.asset(
    name=names.CLIP_EMBEDDINGS,
    partitions_def=image_text_source,
    deps=[names.IMAGE_TEXT_CHECKED],
    group_name="retrieval",
    kinds={"python", "parquet", "pytorch"},
    automation_condition=STAGE,
    description="The image and caption CLIP embeddings of every checked pair (the clip resource), at "
    "storage/clip_embeddings/<source>.parquet: id, image_embedding, caption_embedding.",
    **gpu_asset_kwargs(),
)
def clip_embeddings(context: dg.AssetExecutionContext, refinery: RefineryHome, clip: ClipResource):
    source, storage = context.partition_key, refinery.storage()
    model = clip.load()
    stamp = provenance(names.CLIP_EMBEDDINGS, source, None)
    run = write_clip_embeddings(
        storage, names.IMAGE_TEXT_CHECKED, source, model, stamp, clip.dataloader_workers()
    )
    return materialize_result(
        run.report(), row_count=run.rows, data_version=storage.version(names.CLIP_EMBEDDINGS, source)
    )


image_vector_index = _index_asset(
    names.IMAGE_VECTOR_INDEX,
    names.CLIP_EMBEDDINGS,
    image_text_source,
    ("images", "captions"),
    "HNSW (faiss) over clip_embeddings[<source>]: the images and captions collections, searched by text "
    '(`refinery search "…" --collection images`).',
)
