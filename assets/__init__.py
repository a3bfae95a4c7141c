"""Thin Dagster assets over the refinery library, one module per stage family."""

from assets.mixing import domain_weights, pretrain_mixture
from assets.partitions import PARTITIONS_BY_KIND, sft_source, text_source
from assets.schedule import dataset_splits, training_schedule
from assets.sft import raw_sft, sft_checked, sft_selected
from assets.text_clean import clean_documents
from assets.text_corpus import corpus_report, pretrain_corpus
from assets.text_dedup import exact_deduplicated, fuzzy_deduplicated
from assets.text_filter import heuristic_filtered
from assets.text_ingest import raw_documents

TEXT_PIPELINE = [
    raw_documents,
    clean_documents,
    heuristic_filtered,
    exact_deduplicated,
    fuzzy_deduplicated,
    pretrain_corpus,
]
SFT_PIPELINE = [raw_sft, sft_checked, sft_selected]
TRAINING_DATA = [domain_weights, dataset_splits, pretrain_mixture, training_schedule]
ALL_ASSETS = [*TEXT_PIPELINE, corpus_report, *SFT_PIPELINE, *TRAINING_DATA]

__all__ = [
    "ALL_ASSETS",
    "PARTITIONS_BY_KIND",
    "SFT_PIPELINE",
    "TEXT_PIPELINE",
    "TRAINING_DATA",
    "corpus_report",
    "sft_source",
    "text_source",
]
