"""raw_documents: one inbox source folder parsed into documents, bad input quarantined."""

import dagster as dg

from assets.metadata import inbox_metadata, materialize_stage, provenance, stage_family
from assets.partitions import text_source
from refinery.ingest.stage import ingest_source
from refinery.ingest.text_reader import IngestParams
from resources import RefineryHome

ASSET = "raw_documents"


stage = stage_family(text_source, "text")


class IngestConfig(dg.Config, IngestParams):
    pass


@stage(
    ASSET,
    description="Documents parsed from $REFINERY_HOME/inbox/text/<source>/ (JSONL, JSONL.gz, Parquet, "
    "text files). Malformed lines, bad encodings, missing/empty text and oversized documents are "
    "quarantined in storage/rejected/raw_documents with file, line, reason and the raw bytes.",
)
def raw_documents(context: dg.AssetExecutionContext, config: IngestConfig, refinery: RefineryHome):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = IngestParams(**config.model_dump())
    run = ingest_source(layout, storage, ASSET, source, params, provenance(ASSET, source, params))
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=run.stats.rows_in,
        params=params,
        extra={
            **inbox_metadata(context, run, layout.inbox_source("text", source), "records"),
            "blank_lines_skipped": run.stats.extra["blank_lines"],
        },
    )
