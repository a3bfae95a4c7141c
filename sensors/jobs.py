"""Jobs the sensor and schedule launch."""

import dagster as dg

from assets import TEXT_PIPELINE, corpus_report

text_pipeline_job = dg.define_asset_job(
    "text_pipeline",
    selection=dg.AssetSelection.assets(*TEXT_PIPELINE),
    description="One text source from inbox to pretrain_corpus.",
)

corpus_report_job = dg.define_asset_job(
    "corpus_report_job",
    selection=dg.AssetSelection.assets(corpus_report),
    description="Refresh the cross-source corpus report and the DuckDB catalog.",
)
