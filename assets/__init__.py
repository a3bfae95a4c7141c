"""Thin Dagster assets over the refinery library, one module per stage family."""

from assets.mixing import domain_weights, pretrain_mixture
from assets.multimodal_image_text import clip_filtered, clip_scored, image_text_checked, raw_image_text
from assets.multimodal_video import raw_videos, uniform_keyframes, video_keyframes
from assets.partitions import PARTITIONS_BY_KIND, image_text_source, sft_source, text_source, video_source
from assets.schedule import dataset_splits, training_schedule
from assets.sft import raw_sft, sft_checked, sft_selected
from assets.text_clean import clean_documents
from assets.text_corpus import corpus_report, pretrain_corpus
from assets.text_dedup import exact_deduplicated, fuzzy_deduplicated
from assets.text_embeddings import document_embeddings, semantic_deduplicated
from assets.text_filter import heuristic_filtered
from assets.text_ingest import raw_documents
from assets.text_quality import (
    perplexity_scored,
    quality_classifier,
    quality_scored,
    reference_corpus,
    reference_lm,
)

# Rule-based stages: need nothing but the inbox.
TEXT_PREFILTER = [raw_documents, clean_documents, heuristic_filtered, exact_deduplicated, fuzzy_deduplicated]
# Models trained on the reference corpus and on clean_documents of every source.
TEXT_MODELS = [reference_lm, quality_classifier]
# Model-based stages, then the final corpus.
TEXT_QUALITY = [
    perplexity_scored,
    quality_scored,
    document_embeddings,
    semantic_deduplicated,
    pretrain_corpus,
]
TEXT_PIPELINE = [*TEXT_PREFILTER, *TEXT_QUALITY]
SFT_PIPELINE = [raw_sft, sft_checked, sft_selected]
TRAINING_DATA = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
IMAGE_TEXT_PIPELINE = [raw_image_text, image_text_checked, clip_scored, clip_filtered]
VIDEO_PIPELINE = [raw_videos, video_keyframes, uniform_keyframes]
ALL_ASSETS = [
    *TEXT_PIPELINE,
    reference_corpus,
    *TEXT_MODELS,
    corpus_report,
    *SFT_PIPELINE,
    *TRAINING_DATA,
    *IMAGE_TEXT_PIPELINE,
    *VIDEO_PIPELINE,
]

__all__ = [
    "ALL_ASSETS",
    "IMAGE_TEXT_PIPELINE",
    "PARTITIONS_BY_KIND",
    "SFT_PIPELINE",
    "TEXT_MODELS",
    "TEXT_PIPELINE",
    "TEXT_PREFILTER",
    "TEXT_QUALITY",
    "TRAINING_DATA",
    "VIDEO_PIPELINE",
    "corpus_report",
    "image_text_source",
    "sft_source",
    "text_source",
    "video_source",
]
