"""pretrain_corpus (per source) and corpus_report (over every source)."""

import dagster as dg

from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_embeddings import semantic_deduplicated
from refinery.batch import split_batch
from refinery.report import build_report
from refinery.sql import views, write_catalog
from refinery.stage import run_stage
from resources import RefineryHome

UPSTREAM = "semantic_deduplicated"


stage = stage_family(text_source, "text")


@stage(
    "pretrain_corpus",
    deps=[semantic_deduplicated],
    description="The training-ready corpus of one source: every document that passed every stage, with "
    "all score columns (rule scores, perplexity and bucket, quality score, near-duplicate similarities).",
)
def pretrain_corpus(context: dg.AssetExecutionContext, refinery: RefineryHome):
    storage = refinery.storage()
    source = context.partition_key
    run = run_stage(
        storage,
        UPSTREAM,
        "pretrain_corpus",
        source,
        lambda b: split_batch(b, [None] * len(b)),
        [],
        provenance("pretrain_corpus", source, None),
    )
    return materialize_stage(context, storage, run, rows_in=storage.row_count(UPSTREAM, source), params=None)


@dg.asset(
    deps=[pretrain_corpus],
    group_name="text",
    kinds={"python", "parquet", "duckdb"},
    description="Every source's journey: documents and whitespace tokens per stage, removal reasons, and the "
    "length distribution of the final corpus. Also refreshes reports/catalog.duckdb (SQL views over all "
    "stages). Refreshed daily by corpus_report_schedule.",
)
def corpus_report(context: dg.AssetExecutionContext, refinery: RefineryHome) -> dg.MaterializeResult:
    layout, storage = refinery.layout(), refinery.storage()
    report = build_report(storage)
    folder = storage.root / "corpus_report"
    folder.mkdir(parents=True, exist_ok=True)
    report.stages.to_parquet(folder / "stages.parquet", index=False)
    report.reasons.to_parquet(folder / "reasons.parquet", index=False)
    text = report.markdown()
    layout.reports.mkdir(parents=True, exist_ok=True)
    (layout.reports / "corpus_report.md").write_text(text)
    catalog = layout.reports / "catalog.duckdb"
    write_catalog(storage.root, catalog)
    totals = report.totals()
    final = totals[totals["stage"] == "pretrain_corpus"]
    context.log.info(f"corpus report over {len(report.sources)} sources written to {layout.reports}")
    return dg.MaterializeResult(
        metadata={
            "sources": len(report.sources),
            "final_documents": int(final["rows_out"].sum()) if len(final) else 0,
            "final_tokens": int(final["tokens_out"].sum()) if len(final) else 0,
            "report": dg.MetadataValue.md(text),
            "report_file": dg.MetadataValue.path(str(layout.reports / "corpus_report.md")),
            "duckdb_catalog": dg.MetadataValue.path(str(catalog)),
            "sql_views": dg.MetadataValue.json(views(storage.root)),
        }
    )
