"""raw_documents: one inbox source folder parsed into documents, bad input quarantined."""

import dagster as dg

from assets.metadata import check_specs, materialize_stage, provenance
from assets.partitions import text_source
from refinery import markdown
from refinery.ingest.stage import ingest_source
from refinery.ingest.text_reader import IngestParams
from resources import RefineryHome

ASSET = "raw_documents"


class IngestConfig(dg.Config, IngestParams):
    pass


@dg.asset(
    name=ASSET,
    partitions_def=text_source,
    group_name="text",
    kinds={"python", "parquet"},
    check_specs=check_specs(ASSET),
    description="Documents parsed from $REFINERY_HOME/inbox/text/<source>/ (JSONL, JSONL.gz, Parquet, "
    "text files). Malformed lines, bad encodings, missing/empty text and oversized documents are "
    "quarantined in storage/rejected/raw_documents with file, line, reason and the raw bytes.",
)
def raw_documents(context: dg.AssetExecutionContext, config: IngestConfig, refinery: RefineryHome):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = IngestParams(**config.model_dump())
    run = ingest_source(layout, storage, ASSET, source, params, provenance(ASSET, source, params))
    extra = run.stats.extra
    if not extra["folder_exists"]:
        context.log.warning(
            f"inbox folder {layout.inbox_source('text', source)} does not exist: empty partition"
        )
    elif run.stats.rows_in == 0:
        context.log.warning(f"source {source!r} holds no documents: empty partition")
    files = sorted(extra["files"].items())
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=run.stats.rows_in,
        params=params,
        extra={
            "inbox": dg.MetadataValue.path(str(layout.inbox_source("text", source))),
            "files": dg.MetadataValue.md(
                markdown.table(["file", "records"], files) if files else "_no files_"
            ),
            "input_bytes": extra["input_bytes"],
            "blank_lines_skipped": extra["blank_lines"],
        },
    )
