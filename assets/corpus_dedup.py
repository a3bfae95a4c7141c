"""corpus_fuzzy_dedup: corpus-wide (batch) near-duplicate removal over every text source.

The wiring only; the library (:mod:`refinery.dedup.corpus_publish`) reads every partition of
``exact_deduplicated`` in first-come order (sources sorted, rows in reading order), runs the batch
pass, writes the table and compares it with the incremental ``fuzzy_deduplicated`` decisions.

Keep rule: each connected component of verified near-duplicate pairs keeps its first document in
that order; the others name it in ``duplicate_of``. Use it for a backfill or an audit of a whole
corpus; the incremental stage stays the path for sources that arrive one at a time (batch mode
removes a superset of its removals, through chains A ~ B ~ C). Not automated: materialize it when a
corpus-wide pass is wanted.
"""

from typing import Literal

import dagster as dg
from pydantic import Field

from assets.factory import config_class, publish
from assets.partitions import text_source
from refinery import names
from refinery.dedup.corpus_publish import CorpusFuzzyDedupParams, publish_corpus_dedup
from refinery.kernel.report import provenance
from resources import EngineResource, RefineryHome
from resources.ray_jobs import submit_corpus_dedup

SUBMIT_FIELDS = {"submit", "ray_dashboard", "ray_job_python", "ray_job_env"}


class CorpusFuzzyDedupConfig(config_class(CorpusFuzzyDedupParams, names.CORPUS_FUZZY_DEDUP)):
    """The library's parameters, and where the pass runs (not part of the output's provenance)."""

    submit: Literal["step", "ray_job"] = Field(
        "step",
        description="'step': in this Dagster step's process, its tasks on the `engine` resource. 'ray_job': "
        "submitted as a Ray job to the cluster whose dashboard is `ray_dashboard` (dagster-ray's "
        "PipesRayJobClient); the job's driver runs on the head, its tasks on the cluster's workers, and "
        "metadata, data version and checks come back through Dagster Pipes.",
    )
    ray_dashboard: str = Field(
        "http://127.0.0.1:8265", description="The Ray dashboard (job server) address, for submit 'ray_job'."
    )
    ray_job_python: str = Field(
        "python", description="The Python interpreter on the cluster's head that has Refinery installed."
    )
    ray_job_env: dict[str, str] = Field(
        default_factory=dict, description="Environment variables of the Ray job (e.g. PYTHONPATH)."
    )


@dg.asset(
    name=names.CORPUS_FUZZY_DEDUP,
    deps=[names.EXACT_DEDUPLICATED],
    group_name="text",
    kinds={"python", "parquet"},
    check_specs=[
        dg.AssetCheckSpec(
            "every_document_once",
            asset=names.CORPUS_FUZZY_DEDUP,
            blocking=True,
            description="One row per document of every source's exact_deduplicated output, no key twice.",
        ),
        dg.AssetCheckSpec(
            "one_kept_per_component",
            asset=names.CORPUS_FUZZY_DEDUP,
            blocking=True,
            description="Each component keeps exactly one document, its first in first-come order, and every "
            "other member's duplicate_of names it.",
        ),
    ],
    description="Corpus-wide (batch) MinHash-LSH dedup over every text_source partition of "
    "exact_deduplicated, as datatrove and NeMo Curator run a backfill: signatures, band keys grouped by "
    "bucket, verified duplicate edges, connected components, one document kept per component (the first "
    "by source name, then row). storage/corpus_fuzzy_dedup/corpus_fuzzy_dedup/ (parts and a manifest): "
    "source, id, component, component_size, kept, duplicate_of, similarity. Metadata compares it with "
    "fuzzy_deduplicated (removed by each, the differences, time and peak memory). With the ray engine, "
    "every step (signatures, the band-key shuffle, verification, components, removals) runs on the "
    "workers, each resumable from its files.",
)
def corpus_fuzzy_dedup(
    context: dg.AssetExecutionContext,
    config: CorpusFuzzyDedupConfig,
    refinery: RefineryHome,
    engine: EngineResource,
) -> dg.MaterializeResult:
    sources = context.instance.get_dynamic_partitions(text_source.name)
    params = CorpusFuzzyDedupParams.model_validate(config.model_dump(exclude=SUBMIT_FIELDS))
    stamp = provenance(names.CORPUS_FUZZY_DEDUP, "all", params)
    if config.submit == "ray_job":
        extras = {
            "storage": str(refinery.storage().root),
            "sources": list(sources),
            "params": params.model_dump(),
            "stamp": stamp,
            "engine": {"workers": engine.workers, "slice_rows": engine.slice_rows,
                       "node_ip_address": engine.node_ip_address},
        }  # fmt: skip
        return submit_corpus_dedup(
            context, config.ray_dashboard, config.ray_job_python, config.ray_job_env, extras
        )
    published = publish_corpus_dedup(refinery.storage(), params, engine.engine(), stamp, sources)
    # The manifest's hash (parts, rows, provenance) is the data version: same rows, same version.
    version = published.metadata["manifest"].value["version"]
    return publish(context, published)._replace(data_version=dg.DataVersion(version))
