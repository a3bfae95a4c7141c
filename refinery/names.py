"""The names of the asset graph, defined once.

Stages, models and cross-source tables refer to each other by name: a stage reads its
upstream's files, the corpus report walks the text stages in order, the splits read the dedup
stages' decisions, a scoring stage finds the model another asset trained. Every such name is
written here and only here, so renaming a stage or inserting one is a change in one place.
"""

from __future__ import annotations

# -- text, per text_source partition ------------------------------------------------------------
RAW_DOCUMENTS = "raw_documents"
CLEAN_DOCUMENTS = "clean_documents"
HEURISTIC_FILTERED = "heuristic_filtered"
EXACT_DEDUPLICATED = "exact_deduplicated"
FUZZY_DEDUPLICATED = "fuzzy_deduplicated"
PERPLEXITY_SCORED = "perplexity_scored"
QUALITY_SCORED = "quality_scored"
DOCUMENT_EMBEDDINGS = "document_embeddings"
SEMANTIC_DEDUPLICATED = "semantic_deduplicated"
PRETRAIN_CORPUS = "pretrain_corpus"
# Beside the chain: the documents in other languages than the main ones, each filtered by its
# language's rule set (heuristic_filtered takes the main languages).
MULTILINGUAL_FILTERED = "multilingual_filtered"

# The order of each pipeline is its stage list (refinery/stages/<kind>.py), not a tuple here.
# Stages whose rejected rows name the kept copy (duplicate_of): what splits keep together.
TEXT_DEDUP_STAGES = (EXACT_DEDUPLICATED, FUZZY_DEDUPLICATED)

# -- text models, the corpus report, the batch dedup (not partitioned) -------------------------
REFERENCE_CORPUS = "reference_corpus"
REFERENCE_LM = "reference_lm"
QUALITY_CLASSIFIER = "quality_classifier"
TEXT_MODELS = (REFERENCE_LM, QUALITY_CLASSIFIER)
CORPUS_REPORT = "corpus_report"
# Corpus-wide (batch) fuzzy dedup over every text_source partition, beside the incremental stage.
CORPUS_FUZZY_DEDUP = "corpus_fuzzy_dedup"

# -- fine-tuning records, per sft_source --------------------------------------------------------
RAW_SFT = "raw_sft"
SFT_CHECKED = "sft_checked"
SFT_SELECTED = "sft_selected"

# -- mixing and scheduling, over every source ---------------------------------------------------
DOMAIN_WEIGHTS = "domain_weights"
DOMAIN_WEIGHTS_DOCUMENTS = "domain_weights_documents"  # per-document DSIR log weights
DOMAIN_WEIGHTS_TRAJECTORY = "domain_weights_trajectory"  # DoReMi's weights per update
DATASET_SPLITS = "dataset_splits"
PRETRAIN_MIXTURE = "pretrain_mixture"
TRAINING_SCHEDULE = "training_schedule"

# -- image–text pairs, per image_text_source; videos, per video_source -------------------------
RAW_IMAGE_TEXT = "raw_image_text"
IMAGE_TEXT_CHECKED = "image_text_checked"
CLIP_SCORED = "clip_scored"
CLIP_FILTERED = "clip_filtered"
CLIP_EMBEDDINGS = "clip_embeddings"  # image and caption CLIP vectors, for similarity search
VECTOR_INDEX = "vector_index"  # the HNSW index over document_embeddings (index/vectors/documents)
IMAGE_VECTOR_INDEX = "image_vector_index"  # the same over clip_embeddings (images, captions)
RAW_VIDEOS = "raw_videos"
VIDEO_KEYFRAMES = "video_keyframes"
UNIFORM_KEYFRAMES = "uniform_keyframes"

# -- jobs: the runs sensors, schedules and the CLI launch ---------------------------------------
TEXT_PIPELINE_JOB = "text_pipeline"
TEXT_PREFILTER_JOB = "text_prefilter"
TEXT_MODELS_JOB = "text_models"
TEXT_QUALITY_JOB = "text_quality"
CORPUS_REPORT_JOB = "corpus_report_job"
CORPUS_FUZZY_DEDUP_JOB = "corpus_fuzzy_dedup_job"
SFT_PIPELINE_JOB = "sft_pipeline"
TRAINING_DATA_JOB = "training_data"
IMAGE_TEXT_PIPELINE_JOB = "image_text_pipeline"
VIDEO_PIPELINE_JOB = "video_pipeline"

# -- pools: Dagster concurrency pools the steps declare ------------------------------------------
GPU_POOL = "gpu"  # model steps: one at a time per device (the instance's default limit, 1)
DEDUP_POOL = "dedup_index"  # steps that claim in the shared dedup indexes: a throughput choice only

# -- LLM operators (refinery/llm), off unless an endpoint is configured ---------------------------
LLM_JUDGED = "llm_judged"  # pretrain_corpus documents with a judge score and rationale
LLM_REWRITTEN = "llm_rewritten"  # rephrased documents of a chosen bucket, linked to their originals
LLM_SFT_SYNTHESIZED = "llm_sft_synthesized"  # question–answer pairs per document → inbox/sft/llm-<source>
SFT_JUDGED = "sft_judged"  # sft_selected records with a judge score and rationale
LLM_TEXT_JOB = "llm_text"
LLM_SFT_JOB = "llm_sft"

# -- training tokens: the tokenizer, each source's token ids, the packed shards -----------------
TOKENIZER = "tokenizer"
TOKENIZED_CORPUS = "tokenized_corpus"  # per text_source, like pretrain_corpus
TRAINING_TOKENS = "training_tokens"
TOKENIZER_JOB = "tokenizer_job"
TOKENIZE_JOB = "tokenize_corpus"
TRAINING_TOKENS_JOB = "training_tokens_job"
