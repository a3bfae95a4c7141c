"""Model-based quality: the reference n-gram model and perplexity (CCNet), the quality classifier
and its scores (GPT-3).

The models are assets of their own (not partitioned): each materialization writes a versioned
file under ``$REFINERY_HOME/models/<asset>/``. The scoring assets depend on them, and every scored
partition records the model's path and content hash in its metadata and Parquet provenance, so
the lineage and the files both say which model scored which data.
"""

import math

import dagster as dg

from assets.metadata import materialize_stage, provenance, stage_family
from assets.partitions import text_source
from assets.text_clean import clean_documents
from assets.text_dedup import fuzzy_deduplicated
from refinery import markdown
from refinery.batch import Histogram
from refinery.quality.classifier import (
    QUALITY_FIELDS,
    ClassifierTrainParams,
    QualityParams,
    QualityScorer,
    train_quality_classifier,
)
from refinery.quality.normalize import NORMALIZATION_VERSION
from refinery.quality.perplexity import BUCKETS, PERPLEXITY_FIELDS, PerplexityParams, PerplexityScorer
from refinery.quality.reference import ReferenceLMParams, register_external_lm, train_reference_lm
from refinery.stage import run_stage
from resources import RefineryHome
from resources.kenlm import KenLMResource
from resources.quality import QualityClassifierResource

PERPLEXITY_ASSET = "perplexity_scored"
QUALITY_ASSET = "quality_scored"
MODELS_GROUP = "text_models"
PERPLEXITY_EDGES = [2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000]
SCORE_EDGES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]
SHOWN_PERCENTILES = (1, 5, 10, 25, 33, 50, 66, 75, 90, 95, 99)

reference_corpus = dg.AssetSpec(
    "reference_corpus",
    group_name=MODELS_GROUP,
    kinds={"jsonl"},
    description="High-quality text in $REFINERY_HOME/inbox/reference/<name>/ (any format the text inbox "
    "accepts): what reference_lm trains on and the positive class of quality_classifier. Not materialized "
    "by Refinery; the sample ships one ('curated').",
)


stage = stage_family(text_source, "text")


class ReferenceLMConfig(dg.Config, ReferenceLMParams):
    pass


class PerplexityConfig(dg.Config, PerplexityParams):
    pass


class QualityClassifierConfig(dg.Config, ClassifierTrainParams):
    pass


class QualityConfig(dg.Config, QualityParams):
    pass


def _percentile_table(table: list[float], fmt: str = "{:.4g}") -> str:
    return markdown.table(
        ["percentile", "value"], [(f"p{p}", fmt.format(table[p])) for p in SHOWN_PERCENTILES]
    )


@dg.asset(
    name="reference_lm",
    deps=[reference_corpus],
    group_name=MODELS_GROUP,
    kinds={"kenlm"},
    check_specs=[
        dg.AssetCheckSpec(
            "bucket_cutoffs_increase",
            asset="reference_lm",
            blocking=True,
            description="The held-out reference perplexities give finite, increasing p33 < p66 cutoffs.",
        )
    ],
    description="A KenLM n-gram model (order from the kenlm resource, 5 by default) trained with lmplz on "
    "the reference corpus, then build_binary. A held-out tenth of the reference documents gives the "
    "perplexity percentiles perplexity_scored cuts its head/middle/tail buckets from. Written to "
    "models/reference_lm/reference_lm-o<order>-<sha12>.binary. When the kenlm resource names a model file, "
    "that file is registered instead (checked, percentiles taken on the whole reference corpus).",
)
def reference_lm(
    context: dg.AssetExecutionContext, config: ReferenceLMConfig, refinery: RefineryHome, kenlm: KenLMResource
) -> dg.MaterializeResult:
    layout = refinery.layout()
    params = ReferenceLMParams(**config.model_dump())
    if kenlm.model_path:
        result = register_external_lm(layout, params, kenlm.model_path, kenlm.order)
    else:
        result = train_reference_lm(layout, params, kenlm.order)
    artifact, pct = result.artifact, result.percentiles
    finite = all(math.isfinite(v) for v in pct)
    context.log.info(
        f"reference_lm: {'trained' if result.trained else 'registered'} {artifact.path} "
        f"({result.train_tokens} training tokens) in {result.seconds:.2f}s"
    )
    return dg.MaterializeResult(
        metadata={
            "model_path": dg.MetadataValue.path(str(artifact.path)),
            "model_sha256": artifact.sha256,
            "order": kenlm.order,
            "trained": result.trained,
            "normalization": NORMALIZATION_VERSION,
            "reference": dg.MetadataValue.path(str(result.corpus.folder)),
            "reference_documents": len(result.corpus.documents),
            "reference_chars": result.corpus.chars,
            "reference_quarantined": result.corpus.quarantined,
            "train_documents": result.train_documents,
            "heldout_documents": result.heldout_documents,
            "train_lines": result.train_lines,
            "train_tokens": result.train_tokens,
            "ngram_counts": dg.MetadataValue.md(
                markdown.table(["order", "n-grams"], sorted(result.ngram_counts.items()))
                if result.ngram_counts
                else "_external model_"
            ),
            "reference_perplexity_percentiles": dg.MetadataValue.md(_percentile_table(pct)),
            "parameters": dg.MetadataValue.json(params.model_dump()),
            "seconds": round(result.seconds, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="bucket_cutoffs_increase",
                passed=finite and pct[33] < pct[66],
                metadata={"p33": pct[33], "p66": pct[66]},
            )
        ],
    )


@stage(
    PERPLEXITY_ASSET,
    kinds={"kenlm"},
    deps=[fuzzy_deduplicated, reference_lm],
    description="Perplexity of every document under the reference n-gram model (CCNet: normalized lines, "
    "each scored with sentence markers; per paragraph too for long documents), and its bucket: head / middle "
    "/ tail at the p33/p66 perplexities of held-out reference text. Every bucket is kept by default (CCNet); "
    "drop_buckets (e.g. ['tail'], as RedPajama) and max_perplexity filter. The model's path and hash are in "
    "the metadata and the file's provenance.",
)
def perplexity_scored(
    context: dg.AssetExecutionContext, config: PerplexityConfig, refinery: RefineryHome, kenlm: KenLMResource
):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = PerplexityParams(**config.model_dump())
    model = kenlm.load(layout)
    cutoffs, origin = model.cutoffs(params.bucket_percentiles)
    scorer = PerplexityScorer(model.lm.model, params, cutoffs)
    stamp = provenance(PERPLEXITY_ASSET, source, params)
    stamp.update(model=model.provenance(), bucket_cutoffs=list(cutoffs), normalization=NORMALIZATION_VERSION)
    run = run_stage(
        storage,
        "fuzzy_deduplicated",
        PERPLEXITY_ASSET,
        source,
        scorer.process,
        PERPLEXITY_FIELDS,
        stamp,
        histograms={"perplexity": Histogram(PERPLEXITY_EDGES)},
    )
    lo, hi = cutoffs
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count("fuzzy_deduplicated", source),
        params=params,
        score_columns=["perplexity", "perplexity_bucket"],
        extra={
            "model": dg.MetadataValue.json(model.provenance()),
            "model_path": dg.MetadataValue.path(str(model.lm.path)),
            "model_sha256": model.lm.sha256,
            "bucket_cutoffs": dg.MetadataValue.md(
                markdown.table(
                    ["bucket", "perplexity", "from"],
                    [
                        ("head", f"≤ {lo:.4g}", origin),
                        ("middle", f"≤ {hi:.4g}", origin),
                        ("tail", f"> {hi:.4g}", ""),
                    ],
                )
            ),
            "documents_by_bucket": dg.MetadataValue.md(
                markdown.table(
                    ["bucket", "documents", "dropped"],
                    [(b, scorer.buckets.get(b, 0), b in params.drop_buckets) for b in BUCKETS],
                )
            ),
        },
        summary_extra=lambda: {"perplexity_buckets": dict(scorer.buckets)},
    )


@dg.asset(
    name="quality_classifier",
    deps=[reference_corpus, clean_documents],
    group_name=MODELS_GROUP,
    kinds={"pytorch"},
    check_specs=[
        dg.AssetCheckSpec(
            "heldout_auc",
            asset="quality_classifier",
            blocking=True,
            description="Held-out ROC AUC (reference vs raw) is at least min_heldout_auc.",
        )
    ],
    description="A fastText-like linear classifier (hashed word uni+bigrams, mean embedding, logistic; "
    "trained with torch) telling the reference corpus (positives) from raw documents of every text source "
    "(negatives: clean_documents), as GPT-3's quality filter. Cross-fitted: one model per fold (2 by "
    "default), each document scored by the model that did not train on it, so held-out accuracy and ROC AUC "
    "cover every document, and quality_scored never scores a document with a model that memorized it. "
    "Written to models/quality_classifier/quality_classifier-d<dim>-<sha12>.safetensors. Trained on the "
    "sources present when it runs: re-materialize it after adding sources.",
)
def quality_classifier(
    context: dg.AssetExecutionContext, config: QualityClassifierConfig, refinery: RefineryHome
) -> dg.MaterializeResult:
    layout, storage = refinery.layout(), refinery.storage()
    params = ClassifierTrainParams(**config.model_dump())
    result = train_quality_classifier(layout, storage, params)
    m, artifact = result.metrics, result.artifact
    context.log.info(
        f"quality_classifier: {artifact.path}, held-out accuracy {m['heldout_accuracy']}, "
        f"AUC {m['heldout_auc']}"
    )
    auc = m["heldout_auc"]
    return dg.MaterializeResult(
        metadata={
            "model_path": dg.MetadataValue.path(str(artifact.path)),
            "model_sha256": artifact.sha256,
            "heldout_accuracy": m["heldout_accuracy"],
            "heldout_auc": auc,
            "heldout_mean_score": dg.MetadataValue.json(m["heldout_mean_score"]),
            "heldout_documents": dg.MetadataValue.json(m["heldout_documents"]),
            "evaluation": m["evaluation"],
            "negatives_by_partition": dg.MetadataValue.json(result.negatives_by_partition),
            "reference_quarantined": result.reference_quarantined,
            "reference_score_percentiles": dg.MetadataValue.md(
                _percentile_table(m["reference_score_percentiles"], "{:.3f}")
            ),
            "epoch_loss": dg.MetadataValue.json(m["epoch_loss"]),
            "normalization": NORMALIZATION_VERSION,
            "parameters": dg.MetadataValue.json(params.model_dump()),
            "seconds": round(result.seconds, 3),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="heldout_auc",
                passed=bool(math.isfinite(auc) and auc >= params.min_heldout_auc),
                metadata={"heldout_auc": auc, "min_heldout_auc": params.min_heldout_auc},
            )
        ],
    )


@stage(
    QUALITY_ASSET,
    deps=[perplexity_scored, quality_classifier],
    description="quality_score = P(reference-like) from the quality classifier, for every document. Kept "
    "by default when the score reaches the p10 of the reference documents' out-of-fold scores (what scores "
    "at least like the bottom tenth of the reference); or a fixed threshold; or GPT-3's rule (mode "
    "'pareto': keep if pareto(α=9) > 1 - score, seeded per document). The classifier's path and hash "
    "are recorded.",
)
def quality_scored(
    context: dg.AssetExecutionContext,
    config: QualityConfig,
    refinery: RefineryHome,
    quality_model: QualityClassifierResource,
):
    source = context.partition_key
    layout, storage = refinery.layout(), refinery.storage()
    params = QualityParams(**config.model_dump())
    classifier, info = quality_model.load(layout)
    if params.mode == "threshold":
        cutoff, origin = params.cutoff(info.get("reference_score_percentiles"))
    else:
        cutoff, origin = math.nan, f"pareto noise (α={params.pareto_alpha:g}, seed {params.seed})"
    scorer = QualityScorer(classifier, params, source, cutoff)
    stamp = provenance(QUALITY_ASSET, source, params)
    stamp.update(model=classifier.describe(), cutoff=None if math.isnan(cutoff) else cutoff)
    run = run_stage(
        storage,
        PERPLEXITY_ASSET,
        QUALITY_ASSET,
        source,
        scorer.process,
        QUALITY_FIELDS,
        stamp,
        histograms={"quality_score": Histogram(SCORE_EDGES)},
    )
    return materialize_stage(
        context,
        storage,
        run,
        rows_in=storage.row_count(PERPLEXITY_ASSET, source),
        params=params,
        score_columns=["quality_score", "perplexity"],
        extra={
            "model": dg.MetadataValue.json(classifier.describe()),
            "model_path": dg.MetadataValue.path(str(classifier.path)),
            "model_sha256": classifier.sha256,
            "keep_rule": dg.MetadataValue.md(
                f"mode **{params.mode}**: "
                + (
                    f"keep if quality_score ≥ {cutoff:.4f} ({origin})"
                    if params.mode == "threshold"
                    else origin
                )
            ),
            "classifier_heldout_auc": info.get("heldout_auc", math.nan),
        },
    )
