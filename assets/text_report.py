"""corpus_report: every text source's journey through the stages, over every source."""

import dagster as dg

from assets.automation import EVERY_INTERVAL
from assets.factory import materialize_result
from refinery import names
from refinery.report import publish_report
from resources import RefineryHome


@dg.asset(
    name=names.CORPUS_REPORT,
    automation_condition=EVERY_INTERVAL,
    deps=[names.PRETRAIN_CORPUS],
    group_name="text",
    kinds={"python", "parquet", "duckdb"},
    description="Every source's journey: documents and whitespace tokens per stage, removal reasons, and the "
    "length distribution of the final corpus. Also refreshes reports/catalog.duckdb (SQL views over all "
    "stages). Refreshed by its automation condition when any source's corpus changes (assets/automation.py).",
)
def corpus_report(context: dg.AssetExecutionContext, refinery: RefineryHome) -> dg.MaterializeResult:
    layout = refinery.layout()
    metadata = publish_report(refinery.storage(), layout.reports)
    context.log.info(f"corpus report over {metadata['sources']} sources written to {layout.reports}")
    return materialize_result(metadata)
