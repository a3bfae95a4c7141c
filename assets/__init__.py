"""Thin Dagster assets over the refinery library: stage specs wired by the factory, plus the models,
the cross-source tables and the report."""

from assets.corpus_dedup import corpus_fuzzy_dedup
from assets.mixing import domain_weights, pretrain_mixture
from assets.multimodal import (
    clip_filtered,
    clip_scored,
    image_text_checked,
    raw_image_text,
    raw_videos,
    uniform_keyframes,
    video_keyframes,
)
from assets.partitions import PARTITIONS_BY_KIND, image_text_source, sft_source, text_source, video_source
from assets.retrieval import clip_embeddings, image_vector_index, vector_index
from assets.schedule import dataset_splits, training_schedule
from assets.sft import raw_sft, sft_checked, sft_selected
from assets.text_embeddings import document_embeddings
from assets.text_models import quality_classifier, reference_corpus, reference_lm
from assets.text_report import corpus_report
from assets.text_stages import (
    clean_documents,
    exact_deduplicated,
    fuzzy_deduplicated,
    heuristic_filtered,
    multilingual_filtered,
    perplexity_scored,
    pretrain_corpus,
    quality_scored,
    raw_documents,
    semantic_deduplicated,
)
from assets.tokens import tokenized_corpus, tokenizer, training_tokens
from refinery import names

TEXT_STAGE_ASSETS = {
    a.key.to_user_string(): a
    for a in (
        raw_documents,
        clean_documents,
        heuristic_filtered,
        exact_deduplicated,
        fuzzy_deduplicated,
        perplexity_scored,
        quality_scored,
        document_embeddings,
        semantic_deduplicated,
        pretrain_corpus,
    )
}
# The job lists follow the stage order of refinery.names, so it is written once.
# The rule-based stages, with the other-languages output beside heuristic_filtered.
TEXT_PREFILTER = [*(TEXT_STAGE_ASSETS[n] for n in names.TEXT_PREFILTER_STAGES), multilingual_filtered]
TEXT_MODELS = [reference_lm, quality_classifier]
# The model-based stages, then the similarity index over the embeddings (for `refinery search`).
TEXT_QUALITY = [*(TEXT_STAGE_ASSETS[n] for n in names.TEXT_QUALITY_STAGES), vector_index]
TEXT_PIPELINE = [*TEXT_PREFILTER, *TEXT_QUALITY]
SFT_PIPELINE = [raw_sft, sft_checked, sft_selected]
TRAINING_DATA = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
IMAGE_TEXT_PIPELINE = [
    raw_image_text,
    image_text_checked,
    clip_scored,
    clip_filtered,
    clip_embeddings,
    image_vector_index,
]
VIDEO_PIPELINE = [raw_videos, video_keyframes, uniform_keyframes]
TOKENS = [tokenizer, tokenized_corpus, training_tokens]
ALL_ASSETS = [
    *TEXT_PIPELINE,
    reference_corpus,
    *TEXT_MODELS,
    corpus_report,
    corpus_fuzzy_dedup,
    *SFT_PIPELINE,
    *TRAINING_DATA,
    *IMAGE_TEXT_PIPELINE,
    *VIDEO_PIPELINE,
    *TOKENS,
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
    "TOKENS",
    "TRAINING_DATA",
    "VIDEO_PIPELINE",
    "corpus_fuzzy_dedup",
    "corpus_report",
    "image_text_source",
    "sft_source",
    "text_source",
    "video_source",
]
