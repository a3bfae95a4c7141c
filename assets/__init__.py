"""Thin Dagster assets over the refinery library, one module per stage family."""

from assets.partitions import PARTITIONS_BY_KIND, text_source
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
ALL_ASSETS = [*TEXT_PIPELINE, corpus_report]

__all__ = ["ALL_ASSETS", "PARTITIONS_BY_KIND", "TEXT_PIPELINE", "corpus_report", "text_source"]
