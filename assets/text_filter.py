"""heuristic_filtered: Gopher quality, Gopher repetition and C4 rules, behind a language gate."""

import dagster as dg

from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_clean import clean_documents
from refinery.batch import Histogram
from refinery.filters.chain import SCORE_FIELDS, filter_batch
from refinery.filters.params import HeuristicParams
from refinery.stage import run_stage
from resources import RefineryHome

ASSET = "heuristic_filtered"
SCORE_HISTOGRAMS = {
    "word_count": [50, 100, 200, 500, 1000, 2000, 5000, 10000],
    "mean_word_length": [3, 4, 5, 6, 7, 8, 10],
    "alpha_words_ratio": [0.8, 0.85, 0.9, 0.95],
    "english_word_fraction": [0.1, 0.2, 0.3, 0.4, 0.5],
    "dup_line_frac": [0.01, 0.05, 0.1, 0.2, 0.3],
    "top_2gram_char_frac": [0.02, 0.05, 0.1, 0.15, 0.2],
}


stage = stage_family(text_source, "text")


class HeuristicConfig(dg.Config, HeuristicParams):
    pass


@stage(
    ASSET,
    deps=[clean_documents],
    description="Rule-based quality filtering with the published thresholds: a language gate (the rules "
    "assume English and say so), Gopher quality, Gopher repetition (table A1) and C4. The reason names the "
    "first rule that failed; every score is a column. Each rule has its own threshold (None disables it) "
    "or can be listed in disabled_rules.",
)
def heuristic_filtered(context: dg.AssetExecutionContext, config: HeuristicConfig, refinery: RefineryHome):
    storage = refinery.storage()
    params = HeuristicParams(**config.model_dump())
    run = run_stage(
        storage,
        "clean_documents",
        ASSET,
        context.partition_key,
        lambda batch: filter_batch(batch, params),
        SCORE_FIELDS,
        provenance(ASSET, context.partition_key, params),
        histograms={name: Histogram(edges) for name, edges in SCORE_HISTOGRAMS.items()},
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("clean_documents", context.partition_key),
        params=params,
        score_columns=["word_count", "english_word_fraction", "c4_lines_removed"],
        extra={"assumptions": dg.MetadataValue.md(params.assumptions())},
    )
