"""clean_documents: Unicode repair, whitespace and control characters, PII redaction."""

import dagster as dg

from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_ingest import raw_documents
from refinery import markdown
from refinery.clean.stage import CLEAN_FIELDS, PII_COLUMNS, CleanParams, clean_batch
from refinery.stage import run_stage
from resources import RefineryHome

ASSET = "clean_documents"


stage = stage_family(text_source, "text")


class CleanConfig(dg.Config, CleanParams):
    pass


@stage(
    ASSET,
    deps=[raw_documents],
    description="Text repaired with ftfy, normalized (NFC), stripped of control and zero-width characters, "
    "whitespace tidied, and e-mails, phone numbers, IP addresses and Luhn-valid card numbers redacted. "
    "Counts per PII kind are columns (pii_email, pii_phone, pii_ip, pii_credit_card).",
)
def clean_documents(context: dg.AssetExecutionContext, config: CleanConfig, refinery: RefineryHome):
    storage = refinery.storage()
    params = CleanParams(**config.model_dump())
    pii_totals = dict.fromkeys(PII_COLUMNS, 0)
    changed = 0

    def process(batch):
        nonlocal changed
        result = clean_batch(batch, params)
        for frame in (result.kept, result.rejected):
            for col in PII_COLUMNS:
                pii_totals[col] += int(frame[col].sum())
            changed += int(frame["text_changed"].sum())
        return result

    run = run_stage(
        storage,
        "raw_documents",
        ASSET,
        context.partition_key,
        process,
        CLEAN_FIELDS,
        provenance(ASSET, context.partition_key, params),
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("raw_documents", context.partition_key),
        params=params,
        score_columns=PII_COLUMNS,
        extra={
            "pii_redacted": dg.MetadataValue.md(markdown.table(["kind", "occurrences"], pii_totals.items())),
            "pii_total": sum(pii_totals.values()),
            "documents_changed": changed,
        },
        summary_extra=lambda: {"pii": pii_totals, "documents_changed": changed},
    )
