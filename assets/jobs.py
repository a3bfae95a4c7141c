"""The jobs: which assets a sensor, a schedule or `refinery run` materializes together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import dagster as dg

from assets import (
    IMAGE_TEXT_PIPELINE,
    LLM_SFT,
    LLM_TEXT,
    SFT_PIPELINE,
    TEXT_MODELS,
    TEXT_PIPELINE,
    TEXT_PREFILTER,
    TEXT_QUALITY,
    TOKENS,
    TRAINING_DATA,
    VIDEO_PIPELINE,
    corpus_fuzzy_dedup,
    corpus_report,
)
from refinery import names

if TYPE_CHECKING:
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition


def _asset_job(name: str, assets: list, description: str) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(name, selection=dg.AssetSelection.assets(*assets), description=description)


text_pipeline_job = _asset_job(
    names.TEXT_PIPELINE_JOB,
    TEXT_PIPELINE,
    "One text source from inbox to pretrain_corpus (needs reference_lm and quality_classifier).",
)

text_prefilter_job = _asset_job(
    names.TEXT_PREFILTER_JOB,
    TEXT_PREFILTER,
    "One text source through the rule-based stages, up to fuzzy_deduplicated.",
)

text_models_job = _asset_job(
    names.TEXT_MODELS_JOB,
    TEXT_MODELS,
    "Train reference_lm and quality_classifier (after clean_documents exists for the sources).",
)

text_quality_job = _asset_job(
    names.TEXT_QUALITY_JOB, TEXT_QUALITY, "One text source through the model-based stages to pretrain_corpus."
)

corpus_report_job = _asset_job(
    names.CORPUS_REPORT_JOB, [corpus_report], "Refresh the cross-source corpus report and the DuckDB catalog."
)

corpus_fuzzy_dedup_job = _asset_job(
    names.CORPUS_FUZZY_DEDUP_JOB,
    [corpus_fuzzy_dedup],
    "Corpus-wide (batch) fuzzy dedup over every text source's exact_deduplicated output, compared with "
    "fuzzy_deduplicated.",
)

sft_pipeline_job = _asset_job(
    names.SFT_PIPELINE_JOB, SFT_PIPELINE, "One SFT source from inbox/sft to sft_selected."
)

training_data_job = _asset_job(
    names.TRAINING_DATA_JOB,
    TRAINING_DATA,
    "Domain weights, splits, mixture and training schedule over every text source.",
)

image_text_pipeline_job = _asset_job(
    names.IMAGE_TEXT_PIPELINE_JOB,
    IMAGE_TEXT_PIPELINE,
    "One image–text source from inbox/image_text to clip_filtered.",
)

video_pipeline_job = _asset_job(
    names.VIDEO_PIPELINE_JOB,
    VIDEO_PIPELINE,
    "One video source from inbox/video to video_keyframes and uniform_keyframes.",
)

llm_text_job = _asset_job(
    names.LLM_TEXT_JOB,
    LLM_TEXT,
    "One text source's pretrain_corpus through the LLM stages: judge, rewrite, synthesize SFT pairs "
    "(needs the llm resource's endpoint; see docs/llm.md).",
)

llm_sft_job = _asset_job(
    names.LLM_SFT_JOB,
    LLM_SFT,
    "LLM-judge scores for one SFT source's sft_selected records (needs an endpoint).",
)

tokenizer_job = _asset_job(
    names.TOKENIZER_JOB, TOKENS[:1], "Train (or load) the tokenizer on pretrain_corpus."
)
tokenize_job = _asset_job(
    names.TOKENIZE_JOB, TOKENS[1:2], "One text source's pretrain_corpus tokenized (needs the tokenizer)."
)
training_tokens_job = _asset_job(
    names.TRAINING_TOKENS_JOB,
    TOKENS[2:],
    "The training schedule packed into Megatron and litdata token shards, with the lineage table.",
)
ALL_JOBS = [
    text_pipeline_job,
    text_prefilter_job,
    text_models_job,
    text_quality_job,
    corpus_report_job,
    corpus_fuzzy_dedup_job,
    sft_pipeline_job,
    training_data_job,
    image_text_pipeline_job,
    video_pipeline_job,
    llm_text_job,
    llm_sft_job,
    tokenizer_job,
    tokenize_job,
    training_tokens_job,
]
