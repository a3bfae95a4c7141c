"""The partitioned text stages: each is its library spec, wired to its processor in one line.

Makers that need a resource (a model, the dedup index) read it from ``run.resources`` and name
it in ``resources=``; everything else about a stage (partitions, config, deps, checks, metadata)
comes from its spec through ``assets/factory.py``.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

from assets.factory import ingest_asset, stage_asset
from refinery import markdown
from refinery.batch import BatchProcessor, keep_all
from refinery.clean.cleaning import Cleaner
from refinery.dedup.banding import candidate_probability, s_curve_markdown
from refinery.dedup.exact import ExactDeduper
from refinery.dedup.fuzzy import FuzzyDeduper, signature_function
from refinery.dedup.semantic import SemanticDeduper
from refinery.engine.model_pool import ModelStage
from refinery.engine.model_stages import PooledStage, execute_model_stage
from refinery.filters.language_routing import LanguageFilter
from refinery.ingest.text_reader import SourceReader
from refinery.kernel.report import withdrawn_claims
from refinery.kernel.spec import StageContext
from refinery.metadata import Markdown
from refinery.names import DEDUP_POOL
from refinery.quality.classifier import QualityScorer, attach_scores, load_for_pool, score_rows
from refinery.quality.perplexity import PerplexityScorer, perplexity_function
from refinery.stages import text


def _language_filter(run: StageContext, main: bool) -> BatchProcessor:
    """One side of the language routing (the shared ``language_routing`` resource), stamped into
    the output so a changed split shows as changed parameters."""
    labelled_by = run.storage.provenance(run.spec.upstream, run.source).get("params", {})
    # outputs written before language_model existed were labelled by lingua
    routing = run.resources.language_routing.for_model(labelled_by.get("language_model", "lingua"))
    run.provenance["language_routing"] = routing.model_dump()
    if main:
        run.metadata["assumptions"] = Markdown(run.params.assumptions())
    return LanguageFilter(routing, run.params, main=main)


@contextmanager
def _exact(run: StageContext) -> Iterator[BatchProcessor]:
    dedup_index = run.resources.dedup_index
    with dedup_index.exact(run.layout).claiming(run.source) as claims:
        yield ExactDeduper(claims, run.params)
    run.metadata.update(
        index_backend=dedup_index.backend,
        index_size=claims.size,
        previous_claims_replaced=claims.replaced,
        **withdrawn_claims(claims.withdrawn),
    )
    run.summary["claims_withdrawn"] = claims.withdrawn


@contextmanager
def _fuzzy(run: StageContext) -> Iterator[BatchProcessor]:
    dedup_index = run.resources.dedup_index
    index = dedup_index.fuzzy(run.layout, run.params.index_params())
    lsh = index.params
    signatures = None
    if run.engine.distributed:  # sign on the engine's workers; claim here, in order
        location = run.storage.require(run.spec.upstream, run.source)
        signatures = run.engine.map_slices(
            location, partial(signature_function, lsh), ["text"], run.params.batch_rows
        )
    run.metadata["signatures_computed_by"] = run.engine.name
    with index.claiming(run.source) as claims:
        yield FuzzyDeduper(claims, signatures)
    at_threshold = float(candidate_probability(lsh["threshold"], lsh["bands"], lsh["rows"]))
    run.metadata.update(
        index_backend=dedup_index.backend,
        index_size=claims.size,
        previous_entries_replaced=claims.replaced,
        **withdrawn_claims(claims.withdrawn),
        lsh_bands=Markdown(
            markdown.table(
                ["bands", "rows per band", "permutations", "threshold", "P(candidate) at threshold"],
                [(lsh["bands"], lsh["rows"], lsh["num_perm"], lsh["threshold"], f"{at_threshold:.3f}")],
            )
        ),
        lsh_s_curve=Markdown(s_curve_markdown(lsh["bands"], lsh["rows"], lsh["threshold"], lsh["num_perm"])),
    )
    run.summary["claims_withdrawn"] = claims.withdrawn


def _perplexity(run: StageContext) -> BatchProcessor:
    scoring = run.resources.kenlm.load(run.layout)
    if run.params.bucket_reference == "corpus" and run.provenance.get("bucket_cutoffs"):
        # A worker of a partition split over many: the driver took the partition's cut.
        stamp = run.provenance
        return PerplexityScorer.with_cutoffs(
            scoring, run.params, stamp["bucket_cutoffs"], stamp["bucket_cutoffs_origin"]
        )
    if run.params.bucket_reference == "corpus" and run.engine.distributed:
        # The first pass (the partition's percentiles) on the engine's workers too.
        scorer = PerplexityScorer.uncut(scoring, run.params)
        load = partial(run.resources.kenlm.load, run.layout)
        location = run.storage.require(run.spec.upstream, run.source)
        scorer.cut_at(
            run.engine.map_slices(location, partial(perplexity_function, load, run.params), ["text"])
        )
    else:
        # The local engine reads the partition twice: the first pass keeps the scores for the second.
        partition = run.storage.iter_batches(run.spec.upstream, run.source, columns=["id", "text"])
        scorer = PerplexityScorer.for_model(scoring, run.params, partition)
    run.provenance.update(scorer.provenance())
    for warning in scorer.warnings:
        run.log.warning(warning)
    return scorer


def _quality(run: StageContext) -> BatchProcessor:
    classifier, info = run.resources.quality_model.load(run.layout)
    scorer = QualityScorer.for_model(classifier, info, run.params, run.source)
    run.provenance.update(scorer.provenance())
    return scorer


def _quality_pool(run: StageContext) -> PooledStage:
    """quality_scored on a Ray actor pool: the driver reads the classifier's header (provenance,
    cutoff), the actors load and score, CPU tasks keep or remove. The classifier is numpy: its
    actors ask for no GPU whatever ``compute.num_gpus`` says."""
    loader = run.resources.quality_model
    card, info = loader.describe(run.layout)
    scorer = QualityScorer.for_model(card, info, run.params, run.source)
    run.provenance.update(scorer.provenance())
    model = ModelStage(
        ["id", "text"],
        load=partial(load_for_pool, loader, run.layout),
        infer=partial(score_rows, source=run.source),
    )
    return PooledStage(
        model=model,
        attach=partial(attach_scores, run.params, run.source, scorer.cutoff, scorer.cutoff_origin),
        report=lambda model: scorer,
        pool=replace(run.resources.compute.model_pool(), num_gpus=0.0),
    )


def _semantic(run: StageContext) -> BatchProcessor:
    device = run.resources.compute.torch_device()
    deduper = SemanticDeduper.for_partition(run.storage, run.spec.upstream, run.source, run.params, device)
    run.provenance["embeddings_model"] = deduper.embeddings_model  # compared sources: metadata only
    return deduper


raw_documents = ingest_asset(text.RAW_DOCUMENTS, SourceReader)
clean_documents = stage_asset(text.CLEAN_DOCUMENTS, lambda run: Cleaner(run.params, run.params.language_id()))
heuristic_filtered = stage_asset(
    text.HEURISTIC_FILTERED, partial(_language_filter, main=True), resources=["language_routing"]
)
multilingual_filtered = stage_asset(
    text.MULTILINGUAL_FILTERED, partial(_language_filter, main=False), resources=["language_routing"]
)
exact_deduplicated = stage_asset(text.EXACT_DEDUPLICATED, _exact, resources=["dedup_index"], pool=DEDUP_POOL)
fuzzy_deduplicated = stage_asset(text.FUZZY_DEDUPLICATED, _fuzzy, resources=["dedup_index"], pool=DEDUP_POOL)
perplexity_scored = stage_asset(text.PERPLEXITY_SCORED, _perplexity, resources=["kenlm"])
quality_scored = stage_asset(
    text.QUALITY_SCORED,
    _quality,
    resources=["quality_model", "compute"],
    execute=partial(execute_model_stage, plan=_quality_pool),
)
semantic_deduplicated = stage_asset(text.SEMANTIC_DEDUPLICATED, _semantic, resources=["compute"], gpu=True)
pretrain_corpus = stage_asset(text.PRETRAIN_CORPUS, lambda run: keep_all)
