"""raw_sft → sft_checked → sft_selected: fine-tuning records from the SFT inbox, per source."""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from assets.gpu import gpu_asset_kwargs
from assets.metadata import counts_table, inbox_metadata, materialize_stage, provenance, stage_family
from assets.partitions import sft_source
from refinery import markdown
from refinery.batch import Histogram, split_batch
from refinery.sft.check import CHECK_FIELDS, SftCheckParams, check_batch
from refinery.sft.dedup import SftPromptDeduper, open_group_indexes
from refinery.sft.reader import SftIngestParams
from refinery.sft.rules import SftRules
from refinery.sft.schema import TEXT_COLUMN
from refinery.sft.select import SelectionParams, select, selection_plot
from refinery.sft.stage import INBOX_KIND, ingest_sft_source
from refinery.stage import run_stage
from resources import DedupIndexResource, EmbedderResource, RefineryHome

DEDUP_POOL = "dedup_index"
SELECT_FIELDS = [pa.field("cluster", pa.int32()), pa.field("cluster_distance", pa.float32())]


stage = stage_family(sft_source, "sft", text_column=TEXT_COLUMN)


class SftIngestConfig(dg.Config, SftIngestParams):
    pass


class SftCheckConfig(dg.Config, SftCheckParams):
    pass


class SftSelectConfig(dg.Config, SelectionParams):
    pass


@stage(
    "raw_sft",
    description="SFT records parsed from $REFINERY_HOME/inbox/sft/<source>/ (JSONL, JSONL.gz, JSON arrays, "
    "Parquet) and normalised to one schema with a `kind` (instruction, conversation, preference, ranked): "
    "Alpaca, Dolly, ShareGPT, OpenAI messages, prompt/chosen/rejected, message-list and HH preference pairs, "
    "ranked responses. Malformed records are quarantined in storage/rejected/raw_sft with reason and "
    "raw bytes.",
)
def raw_sft(context: dg.AssetExecutionContext, config: SftIngestConfig, refinery: RefineryHome):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = SftIngestParams(**config.model_dump())
    run = ingest_sft_source(layout, storage, "raw_sft", source, params, provenance("raw_sft", source, params))
    extra = run.stats.extra
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=run.stats.rows_in,
        params=params,
        score_columns=["kind", "format"],
        extra={
            **inbox_metadata(context, run, layout.inbox_source(INBOX_KIND, source), "records"),
            "kinds": counts_table(extra["kinds"], "records"),
            "formats": counts_table(extra["formats"], "records"),
        },
        text_column=TEXT_COLUMN,
    )


@stage(
    "sft_checked",
    deps=[raw_sft],
    pool=DEDUP_POOL,
    description="SFT rules (empty, truncated, prompt-echoing and refusing responses; prompt/response/turn "
    "limits; identical preference pairs, tied rankings; a language gate), then exact and MinHash-LSH "
    "dedup of the prompt against every SFT partition materialized before (demonstrations and preference "
    "data in separate indexes). Rejected rows name the rule or the kept duplicate.",
)
def sft_checked(
    context: dg.AssetExecutionContext,
    config: SftCheckConfig,
    refinery: RefineryHome,
    dedup_index: DedupIndexResource,
):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = SftCheckParams(**config.model_dump())
    rules = SftRules(params)
    indexes = open_group_indexes(
        dedup_index.backend, layout, dedup_index.redis_url, dedup_index.namespace, params
    )
    deduper = SftPromptDeduper(indexes, source, params)
    try:
        deduper.begin()
        run = run_stage(
            storage,
            "raw_sft",
            "sft_checked",
            source,
            lambda batch: check_batch(batch, rules, deduper),
            CHECK_FIELDS,
            provenance("sft_checked", source, params),
            names_duplicates=True,
            histograms={
                "response_chars": Histogram([10, 50, 100, 250, 500, 1000, 2000, 4000, 8000]),
                "prompt_overlap": Histogram([0.1, 0.25, 0.5, 0.75, 0.9, 0.95]),
            },
            text_column=TEXT_COLUMN,
        )
        deduper.commit()
        sizes = deduper.sizes()
    except BaseException:
        deduper.abort()
        raise
    finally:
        deduper.close()
    withdrawn = deduper.withdrawn
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("raw_sft", source),
        params=params,
        score_columns=["kind", "response_chars", "prompt_overlap"],
        extra={
            "index_backend": dedup_index.backend,
            "index_sizes": dg.MetadataValue.json(sizes),
            "claims_withdrawn": len(withdrawn),
            "claims_withdrawn_sample": dg.MetadataValue.md(
                "\n".join(f"- {k}" for k in withdrawn[:20]) if withdrawn else "_none_"
            ),
        },
        summary_extra=lambda: {"claims_withdrawn": withdrawn},
        text_column=TEXT_COLUMN,
    )


def _cluster_table(frame: pd.DataFrame, selection, limit: int = 20) -> str:
    """Largest clusters first: size before, kept after, and the prompt nearest the centroid."""
    examples = (
        frame.assign(cluster=selection.labels, d=selection.distances)
        .sort_values(["cluster", "d"])
        .drop_duplicates("cluster")
        .set_index("cluster")["prompt"]
    )
    order = np.argsort(-selection.sizes, kind="stable")[:limit]
    rows = [
        (int(c), int(selection.sizes[c]), int(selection.taken[c]), markdown.preview(examples.get(c, ""), 80))
        for c in order
    ]
    more = len(selection.sizes) - len(order)
    note = f"\n\n_{more} smaller clusters not shown_" if more > 0 else ""
    return markdown.table(["cluster", "before", "after", "typical prompt"], rows) + note


@stage(
    "sft_selected",
    kinds={"pytorch"},
    deps=[sft_checked],
    description="A diverse subset to a budget (count or fraction): prompt embeddings "
    "(sentence-transformers), "
    "k-means, then per-cluster sampling (proportional or uniform; random, by quality score, or nearest the "
    "centroid). Every row carries its cluster; dropped rows are rejected as not_selected with the cluster's "
    "before → after counts. Coverage, per-cluster counts and a PCA plot of kept vs dropped in metadata.",
    **gpu_asset_kwargs(),
)
def sft_selected(
    context: dg.AssetExecutionContext,
    config: SftSelectConfig,
    refinery: RefineryHome,
    embedder: EmbedderResource,
):
    source = context.partition_key
    storage = refinery.storage()
    params = SelectionParams(**config.model_dump())
    frame = storage.read("sft_checked", source, columns=["id", "kind", "prompt", "quality"])
    model = embedder.load()
    embeddings = model.encode(frame["prompt"].tolist())
    quality = pd.to_numeric(frame["quality"], errors="coerce").to_numpy(dtype=float, na_value=np.nan)
    if params.within_cluster == "quality" and np.isnan(quality).all() and len(frame):
        context.log.warning("within_cluster='quality' but no record has a quality score: order is random")
    selection = select(embeddings, quality, params)
    by_id = {
        doc_id: (int(c), float(d), bool(k))
        for doc_id, c, d, k in zip(
            frame["id"], selection.labels, selection.distances, selection.keep, strict=True
        )
    }

    def process(batch: pd.DataFrame):
        info = [by_id[i] for i in batch["id"]]
        out = batch.assign(cluster=[c for c, _, _ in info], cluster_distance=[d for _, d, _ in info])
        reasons = [
            None
            if keep
            else (
                "not_selected",
                f"cluster {c}: {selection.sizes[c]} → {selection.taken[c]} ({params.allocation}, "
                f"{params.within_cluster})",
            )
            for c, _, keep in info
        ]
        return split_batch(out, reasons)

    run = run_stage(
        storage,
        "sft_checked",
        "sft_selected",
        source,
        process,
        SELECT_FIELDS,
        provenance("sft_selected", source, params),
        text_column=TEXT_COLUMN,
    )
    kept_kinds = frame.loc[selection.keep, "kind"].value_counts().to_dict() if len(frame) else {}
    all_kinds = frame["kind"].value_counts().to_dict() if len(frame) else {}
    extra = {
        "budget": selection.budget,
        "clusters": selection.k,
        "clusters_represented": int((selection.taken > 0).sum()),
        "coverage": round(selection.coverage, 4),
        "kmeans_iterations": selection.iterations,
        "embedding_model": model.name,
        "embedding_device": model.device,
        "per_cluster": dg.MetadataValue.md(_cluster_table(frame, selection) if len(frame) else "_empty_"),
        "kinds_before_after": dg.MetadataValue.md(
            markdown.table(
                ["kind", "before", "after"], [(k, n, kept_kinds.get(k, 0)) for k, n in all_kinds.items()]
            )
        ),
    }
    if len(frame) >= 2:
        extra["projection"] = dg.MetadataValue.md(
            f"![kept vs dropped, PCA of prompt embeddings]({selection_plot(embeddings, selection.keep)})"
        )
    if selection.coverage < 1:
        context.log.warning(
            f"budget {selection.budget} < {int((selection.sizes > 0).sum())} clusters: "
            f"only {selection.coverage:.0%} of clusters represented"
        )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("sft_checked", source),
        params=params,
        score_columns=["kind", "cluster", "cluster_distance"],
        extra=extra,
        summary_extra=lambda: {
            "clusters": selection.k,
            "coverage": selection.coverage,
            "cluster_sizes": selection.sizes.tolist(),
            "cluster_taken": selection.taken.tolist(),
        },
        text_column=TEXT_COLUMN,
    )
