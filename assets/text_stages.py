"""The partitioned text stages: each is its library spec, wired to its processor in one line.

Makers that need a resource (a model, the dedup index) read it from ``run.resources`` and name
it in ``resources=``; everything else about a stage (partitions, config, deps, checks, metadata)
comes from its spec through ``assets/factory.py``.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from functools import partial

from assets.factory import ingest_asset, stage_asset
from refinery import markdown
from refinery.batch import BatchProcessor, keep_all
from refinery.clean.cleaning import Cleaner
from refinery.dedup.banding import candidate_probability, s_curve_markdown
from refinery.dedup.claim_plan import STAMP as CLAIMS_STAMP
from refinery.dedup.claim_plan import (
    DecidedClaims,
    claim_parts,
    hash_table_function,
    signature_id_table_function,
)
from refinery.dedup.exact import EXACT_FIELDS, ExactDeduper
from refinery.dedup.fuzzy import FUZZY_FIELDS, FuzzyDeduper
from refinery.dedup.semantic import SemanticDeduper
from refinery.dedup.semantic_tasks import distributed_deduper, plan_stamp, remove_work, slice_deduper
from refinery.engine.model_pool import ModelStage
from refinery.engine.model_stages import PooledStage, execute_model_stage
from refinery.engine.resume import (
    data_version,
    fingerprint,
    remove_scratch,
    scratch_folder,
    scratch_path,
    scratch_relative,
    under_root,
)
from refinery.engine.slices import current_slice, slice_location
from refinery.filters.language_routing import LanguageFilter
from refinery.ingest.text_reader import SourceReader
from refinery.kernel.report import withdrawn_claims
from refinery.kernel.spec import StageContext
from refinery.metadata import Json, Markdown
from refinery.names import DEDUP_POOL
from refinery.quality.classifier import QualityScorer, attach_scores, load_for_pool, score_rows
from refinery.quality.normalize import NORMALIZATION_VERSION
from refinery.quality.perplexity import PerplexityScorer, ScoreParts, score_sketch, score_table_function
from refinery.quantiles import QuantileSketch
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


def _exact(run: StageContext):
    """In this process: hashes and claims batch by batch. On a distributed engine: hashes on the
    workers, claims here (:mod:`refinery.dedup.claim_plan`), the rows written by the workers."""
    if CLAIMS_STAMP in run.provenance:  # a worker writing its slices: the step has claimed
        return DecidedClaims(under_root(run.storage, run.provenance[CLAIMS_STAMP]["folder"]), "content_hash")
    return _exact_claims(run)


@contextmanager
def _exact_claims(run: StageContext) -> Iterator[BatchProcessor]:
    dedup_index = run.resources.dedup_index
    with dedup_index.exact(run.layout).claiming(run.source) as claims:
        if run.engine.distributed:
            normalization = run.params.normalization
            yield from _planned_claims(
                run,
                "exact",
                partial(hash_table_function, normalization),
                lambda frame, keys: ExactDeduper(claims, run.params, keys)(frame),
                EXACT_FIELDS[0],
                {"normalization": normalization},
            )
        else:
            yield ExactDeduper(claims, run.params)
    run.metadata.update(
        index_backend=dedup_index.backend,
        index_size=claims.size,
        previous_claims_replaced=claims.replaced,
        **withdrawn_claims(claims.withdrawn),
    )
    run.summary["claims_withdrawn"] = claims.withdrawn


def _planned_claims(
    run: StageContext, kind: str, key_function, decide, score, key_params: dict, num_perm: int = 0
):
    """The three steps of :mod:`refinery.dedup.claim_plan` inside the index's claiming block: keys
    on the workers, claims here, then the processor the workers write with (the outcome folder
    and its digest stamped in the provenance). The key and outcome parts go once it is committed."""
    location = slice_location(run.storage, run.spec.upstream, run.source)  # a URI on an object store
    key = fingerprint(data_version(location), kind, key_params, run.engine.describe())
    keys = scratch_folder(run.storage, run.spec.name, run.source, "keys", key)
    parts = run.engine.map_to_parts(location, key_function, ["id", "text"], keys, run.params.batch_rows)
    outcomes = scratch_folder(run.storage, run.spec.name, run.source, "outcomes", key)
    figures = claim_parts(keys, parts, kind, decide, score, outcomes, run.params.batch_rows, num_perm)
    run.provenance[CLAIMS_STAMP] = {
        "folder": scratch_relative(run.spec.name, run.source, "outcomes", key),
        "digest": figures.digest,
    }
    run.metadata["claims_plan"] = Json(
        {**figures.metadata(), "keys_computed_by": run.engine.name, "rows_written_by": run.engine.name}
    )
    yield DecidedClaims(outcomes, score.name)
    remove_scratch(keys)  # written and committed: the keys and outcomes are spent (a failure keeps them)
    remove_scratch(outcomes)


def _fuzzy(run: StageContext):
    """In this process: signatures and claims batch by batch. On a distributed engine: signatures on
    the workers, claims here, the rows written by the workers (:mod:`refinery.dedup.claim_plan`)."""
    if CLAIMS_STAMP in run.provenance:  # a worker writing its slices: the step has claimed
        return DecidedClaims(
            under_root(run.storage, run.provenance[CLAIMS_STAMP]["folder"]), "near_dup_similarity"
        )
    return _fuzzy_claims(run)


@contextmanager
def _fuzzy_claims(run: StageContext) -> Iterator[BatchProcessor]:
    dedup_index = run.resources.dedup_index
    index = dedup_index.fuzzy(run.layout, run.params.index_params())
    lsh = index.params
    run.metadata["signatures_computed_by"] = run.engine.name
    with index.claiming(run.source) as claims:
        if run.engine.distributed:
            yield from _planned_claims(
                run,
                "fuzzy",
                partial(signature_id_table_function, lsh),
                lambda frame, keys: FuzzyDeduper(claims, keys)(frame),
                FUZZY_FIELDS[0],
                lsh,
                int(lsh["num_perm"]),
            )
        else:
            yield FuzzyDeduper(claims)
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


def _scores_path(run: StageContext, scoring, location) -> tuple[str, str]:
    """(fingerprint, folder) of the first pass's score parts: the same on the driver and on every
    worker, and changed by anything that changes a score (rows, model, parameters, slicing)."""
    p = run.params
    key = fingerprint(
        data_version(location),
        scoring.provenance(),
        p.paragraph_detail_min_chars,
        NORMALIZATION_VERSION,
        run.engine.describe(),
    )
    return key, str(scratch_path(run.storage, run.spec.name, run.source, "scores", key))


def _perplexity(run: StageContext):
    scoring = run.resources.kenlm.load(run.layout)
    location = slice_location(run.storage, run.spec.upstream, run.source)  # a URI on an object store
    if run.params.bucket_reference == "corpus" and "bucket_cutoffs_origin" in run.provenance:
        # A worker deciding slices of a partition split over many: the driver took the cut from
        # the first pass's sketches; the scores are read back from that pass's part for the slice.
        stamp = run.provenance
        scorer = PerplexityScorer.with_cutoffs(
            scoring, run.params, stamp["bucket_cutoffs"], stamp["bucket_cutoffs_origin"]
        )
        scorer.read_scores(ScoreParts(_scores_path(run, scoring, location)[1], _slice_index))
        return scorer
    if run.params.bucket_reference == "corpus" and run.engine.distributed:
        return _perplexity_first_pass_on_workers(run, scoring, location)
    # The local engine reads the partition twice: the first pass keeps the scores for the second.
    partition = run.storage.iter_batches(run.spec.upstream, run.source, columns=["id", "text"])
    scorer = PerplexityScorer.for_model(scoring, run.params, partition)
    _stamp(run, scorer)
    return scorer


def _slice_index() -> int:
    piece = current_slice()
    if piece is None:
        raise RuntimeError("perplexity_scored's second pass runs per slice on an engine's workers")
    return piece.index


@contextmanager
def _perplexity_first_pass_on_workers(run: StageContext, scoring, location) -> Iterator[BatchProcessor]:
    """Score every document once, on the workers: each slice's scores go to a part, each part's
    quantile sketch comes back; the sum of the sketches gives the partition's cut-offs. The
    workers' second pass reads the parts (no document is scored twice); the parts are removed once
    the stage's output is committed, and kept for a retry when it fails."""
    accuracy = run.params.bucket_relative_accuracy
    scorer = PerplexityScorer.uncut(scoring, run.params)
    key, _ = _scores_path(run, scoring, location)
    folder = scratch_folder(run.storage, run.spec.name, run.source, "scores", key)
    started = time.perf_counter()
    parts = run.engine.map_to_parts(
        location,
        partial(score_table_function, partial(run.resources.kenlm.load, run.layout), run.params),
        ["id", "text"],
        folder,
        run.spec.batch_rows,
        summarize=partial(score_sketch, accuracy),
    )
    sketch = QuantileSketch.merged((QuantileSketch.from_dict(p["summary"]) for p in parts), accuracy)
    scorer.cut_from(sketch)
    scorer.first_pass = {
        "where": run.engine.name,
        "parts": len(parts),
        "reused_from_an_earlier_attempt": sum(p["reused"] for p in parts),
        "worker_seconds": round(sum(p["seconds"] for p in parts), 3),
        "seconds": round(time.perf_counter() - started, 3),
        "sketch": sketch.describe(),
    }
    _stamp(run, scorer)
    yield scorer
    remove_scratch(folder)


def _stamp(run: StageContext, scorer: PerplexityScorer) -> None:
    run.provenance.update(scorer.provenance())
    for warning in scorer.warnings:
        run.log.warning(warning)


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


SEMANTIC_STAMP = "semantic_plan"  # provenance key: the shuffle's folder, for the workers writing slices


def _semantic(run: StageContext):
    """In this process (the local engine), or, on a distributed engine, as shuffle steps on its
    workers (k-means on a sample here, the rule per cluster there): the same decisions. There the
    workers also write the output, each slice with its rows' decisions (:class:`SliceDecisions`)."""
    stamp = run.provenance.get(SEMANTIC_STAMP)
    if stamp:  # a worker writing its slices: the step has run the shuffle
        model = run.provenance.get("embeddings_model", "")
        return slice_deduper(run.storage, run.spec.upstream, run.source, run.params, stamp, model)
    return _semantic_plan(run)


@contextmanager
def _semantic_plan(run: StageContext) -> Iterator[BatchProcessor]:
    if run.engine.distributed:
        runner, workers = run.engine.tasks()
        slice_rows = int(getattr(run.engine, "slice_rows", 20_000))
        deduper = distributed_deduper(
            run.storage,
            run.spec.upstream,
            run.source,
            run.params,
            runner,
            workers,
            slice_rows,
            run.engine.name,
        )
        run.provenance[SEMANTIC_STAMP] = plan_stamp(run.storage, deduper.job)
    else:
        device = run.resources.compute.torch_device()
        deduper = SemanticDeduper.for_partition(
            run.storage, run.spec.upstream, run.source, run.params, device
        )
    run.provenance["embeddings_model"] = deduper.embeddings_model  # compared sources: metadata only
    run.metadata["semantic_dedup_ran_on"] = run.engine.name
    yield deduper
    if run.engine.distributed:  # written: the shuffle's files go (a failed run leaves them for its retry)
        remove_work(run.storage, run.source)


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
