"""Thin Dagster assets over the refinery library: stage specs wired by the factory, plus the models,
the cross-source tables and the report."""

from assets import stage_defaults
from assets.corpus_dedup import corpus_fuzzy_dedup
from assets.factory import STAGE_ASSETS
from assets.llm import llm_judged, llm_rewritten, llm_sft_synthesized, sft_judged
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
from assets.partitions import image_text_source, partitions_of, sft_source, text_source, video_source
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
from refinery.kinds import KINDS
from refinery.stages import text


def pipeline(kind: str) -> list:
    """The stage assets of an inbox kind in its pipeline order (refinery/stages/<kind>.py)."""
    return [STAGE_ASSETS[spec.name] for spec in KINDS[kind].stages]


# The job lists follow the stage order of refinery/stages/, so it is written once.
# The rule-based stages, with the other-languages output beside heuristic_filtered.
TEXT_PREFILTER = [*(STAGE_ASSETS[n] for n in text.TEXT_PREFILTER_STAGES), multilingual_filtered]
TEXT_MODELS = [reference_lm, quality_classifier]
# The model-based stages, then the similarity index over the embeddings (for `refinery search`).
TEXT_QUALITY = [*(STAGE_ASSETS[n] for n in text.TEXT_QUALITY_STAGES), vector_index]
TEXT_PIPELINE = [*TEXT_PREFILTER, *TEXT_QUALITY]
SFT_PIPELINE = pipeline("sft")
TRAINING_DATA = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
# The pairs' stages, then the CLIP vectors of what is kept and their similarity index.
IMAGE_TEXT_PIPELINE = [*pipeline("image_text"), clip_embeddings, image_vector_index]
VIDEO_PIPELINE = pipeline("video")
# The LLM stages (refinery/llm): run on demand unless an endpoint is configured (assets/llm.py).
LLM_TEXT = [llm_judged, llm_rewritten, llm_sft_synthesized]
LLM_SFT = [sft_judged]
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
    *LLM_TEXT,
    *LLM_SFT,
    *TOKENS,
]
stage_defaults.check_all_used()  # every config class is made by now: an unknown name in the file fails

__all__ = [
    "ALL_ASSETS",
    "IMAGE_TEXT_PIPELINE",
    "LLM_SFT",
    "LLM_TEXT",
    "SFT_PIPELINE",
    "STAGE_ASSETS",
    "TEXT_MODELS",
    "TEXT_PIPELINE",
    "TEXT_PREFILTER",
    "TEXT_QUALITY",
    "TOKENS",
    "TRAINING_DATA",
    "VIDEO_PIPELINE",
    "clean_documents",
    "clip_embeddings",
    "clip_filtered",
    "clip_scored",
    "corpus_fuzzy_dedup",
    "corpus_report",
    "dataset_splits",
    "document_embeddings",
    "domain_weights",
    "exact_deduplicated",
    "fuzzy_deduplicated",
    "heuristic_filtered",
    "image_text_checked",
    "image_text_source",
    "image_vector_index",
    "multilingual_filtered",
    "partitions_of",
    "perplexity_scored",
    "pipeline",
    "pretrain_corpus",
    "pretrain_mixture",
    "quality_classifier",
    "quality_scored",
    "raw_documents",
    "raw_image_text",
    "raw_sft",
    "raw_videos",
    "reference_corpus",
    "reference_lm",
    "semantic_deduplicated",
    "sft_checked",
    "sft_selected",
    "sft_source",
    "text_source",
    "training_schedule",
    "uniform_keyframes",
    "vector_index",
    "video_keyframes",
    "video_source",
]
