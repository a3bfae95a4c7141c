"""Jobs the sensors and schedule launch."""

import dagster as dg

from assets import (
    SFT_PIPELINE,
    TEXT_MODELS,
    TEXT_PIPELINE,
    TEXT_PREFILTER,
    TEXT_QUALITY,
    TRAINING_DATA,
    corpus_report,
)

text_pipeline_job = dg.define_asset_job(
    "text_pipeline",
    selection=dg.AssetSelection.assets(*TEXT_PIPELINE),
    description="One text source from inbox to pretrain_corpus (needs reference_lm and quality_classifier).",
)

text_prefilter_job = dg.define_asset_job(
    "text_prefilter",
    selection=dg.AssetSelection.assets(*TEXT_PREFILTER),
    description="One text source through the rule-based stages, up to fuzzy_deduplicated.",
)

text_models_job = dg.define_asset_job(
    "text_models",
    selection=dg.AssetSelection.assets(*TEXT_MODELS),
    description="Train reference_lm and quality_classifier (after clean_documents exists for the sources).",
)

text_quality_job = dg.define_asset_job(
    "text_quality",
    selection=dg.AssetSelection.assets(*TEXT_QUALITY),
    description="One text source through the model-based stages to pretrain_corpus.",
)

corpus_report_job = dg.define_asset_job(
    "corpus_report_job",
    selection=dg.AssetSelection.assets(corpus_report),
    description="Refresh the cross-source corpus report and the DuckDB catalog.",
)

sft_pipeline_job = dg.define_asset_job(
    "sft_pipeline",
    selection=dg.AssetSelection.assets(*SFT_PIPELINE),
    description="One SFT source from inbox/sft to sft_selected.",
)

training_data_job = dg.define_asset_job(
    "training_data",
    selection=dg.AssetSelection.assets(*TRAINING_DATA),
    description="Domain weights, splits, mixture and training schedule over every text source.",
)
