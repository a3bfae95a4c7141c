"""exact_deduplicated and fuzzy_deduplicated: against every partition materialized before.

Both stages read and write an index shared by all partitions, so they run in the
``dedup_index`` pool (limit 1 in the instance's dagster.yaml): one writer at a time, and
first come, first served is well defined.
"""

import dagster as dg

from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_filter import heuristic_filtered
from refinery import markdown
from refinery.batch import Histogram
from refinery.dedup.exact import EXACT_FIELDS, ExactDeduper, ExactDedupParams
from refinery.dedup.fuzzy import FUZZY_FIELDS, FuzzyDeduper, FuzzyDedupParams
from refinery.stage import run_stage
from resources import DedupIndexResource, RefineryHome

DEDUP_POOL = "dedup_index"


stage = stage_family(text_source, "text")


class ExactDedupConfig(dg.Config, ExactDedupParams):
    pass


class FuzzyDedupConfig(dg.Config, FuzzyDedupParams):
    pass


def _stale_note(withdrawn: list[str]) -> dict:
    """Documents that left this partition may have been the kept copy of another's duplicate."""
    return {
        "claims_withdrawn": len(withdrawn),
        "claims_withdrawn_sample": dg.MetadataValue.md(
            "\n".join(f"- {k}" for k in withdrawn[:20])
            if withdrawn
            else "_none: no document left this partition_"
        ),
    }


@stage(
    "exact_deduplicated",
    kinds={"sqlite"},
    deps=[heuristic_filtered],
    pool=DEDUP_POOL,
    description="Exact duplicates after normalization, against a persistent index of every partition "
    "materialized before (first come, first served; within a partition, the first in reading order wins). "
    "Rejected rows name the kept document in duplicate_of.",
)
def exact_deduplicated(
    context: dg.AssetExecutionContext,
    config: ExactDedupConfig,
    refinery: RefineryHome,
    dedup_index: DedupIndexResource,
):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = ExactDedupParams(**config.model_dump())
    index = dedup_index.exact(layout)
    try:
        index.begin(source)
        deduper = ExactDeduper(index, source, params)
        run = run_stage(
            storage,
            "heuristic_filtered",
            "exact_deduplicated",
            source,
            deduper.process,
            EXACT_FIELDS,
            provenance("exact_deduplicated", source, params),
            names_duplicates=True,
        )
        withdrawn = index.commit()
        size = index.count()
    except BaseException:
        index.abort()
        raise
    finally:
        index.close()
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("heuristic_filtered", source),
        params=params,
        score_columns=["content_hash"],
        extra={"index_backend": dedup_index.backend, "index_size": size, **_stale_note(withdrawn)},
        summary_extra=lambda: {"claims_withdrawn": withdrawn},
    )


@stage(
    "fuzzy_deduplicated",
    deps=[exact_deduplicated],
    pool=DEDUP_POOL,
    description="Near-duplicates by MinHash-LSH (datasketch; word 5-gram shingles, 128 permutations, "
    "Jaccard 0.8 by default), within the partition and against every partition materialized before. "
    "Candidates are verified by estimated Jaccard; rejected rows name the kept neighbour and similarity.",
)
def fuzzy_deduplicated(
    context: dg.AssetExecutionContext,
    config: FuzzyDedupConfig,
    refinery: RefineryHome,
    dedup_index: DedupIndexResource,
):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = FuzzyDedupParams(**config.model_dump())
    index = dedup_index.fuzzy(layout, params.index_params())
    try:
        removed = index.remove_source(source)
        deduper = FuzzyDeduper(index, source, params.threshold)
        run = run_stage(
            storage,
            "exact_deduplicated",
            "fuzzy_deduplicated",
            source,
            deduper.process,
            FUZZY_FIELDS,
            provenance("fuzzy_deduplicated", source, params),
            names_duplicates=True,
            histograms={"near_dup_similarity": Histogram([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])},
        )
        index.commit()
        size = index.count()
    finally:
        index.close()
    lsh = index.params
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("exact_deduplicated", source),
        params=params,
        score_columns=["near_dup_similarity"],
        extra={
            "index_backend": dedup_index.backend,
            "index_size": size,
            "previous_entries_replaced": removed,
            "lsh_bands": dg.MetadataValue.md(
                markdown.table(
                    ["bands", "rows per band", "permutations", "threshold"],
                    [(lsh["bands"], lsh["rows"], lsh["num_perm"], lsh["threshold"])],
                )
            ),
        },
    )
