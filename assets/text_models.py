"""The text models: the reference n-gram model (CCNet) and the quality classifier (GPT-3).

They are assets of their own (not partitioned): each materialization writes a versioned file under
``$REFINERY_HOME/models/<asset>/``. The scoring stages depend on them, and every scored partition
records the model's path and content hash in its metadata and Parquet provenance, so the lineage
and the files both say which model scored which data.
"""

import warnings

import dagster as dg

from assets.automation import MODEL, OBSERVE
from assets.factory import config_class, materialize_result
from refinery import names
from refinery.inbox import inbox_version
from refinery.quality.classifier import ClassifierTrainParams, train_quality_classifier
from refinery.quality.reference import (
    REFERENCE_KIND,
    ReferenceLMParams,
    register_external_lm,
    train_reference_lm,
)
from resources import RefineryHome
from resources.kenlm import KenLMResource

MODELS_GROUP = "text_models"
ReferenceLMConfig = config_class(ReferenceLMParams, names.REFERENCE_LM)
QualityClassifierConfig = config_class(ClassifierTrainParams, names.QUALITY_CLASSIFIER)


def _observe_reference(refinery: RefineryHome) -> dg.DataVersion:
    return dg.DataVersion(inbox_version(refinery.layout(), REFERENCE_KIND))


with warnings.catch_warnings():  # observable source assets are a beta API of Dagster 1.13
    warnings.simplefilter("ignore", dg.BetaWarning)
    reference_corpus = dg.observable_source_asset(
        name=names.REFERENCE_CORPUS,
        group_name=MODELS_GROUP,
        automation_condition=OBSERVE,
        description="High-quality text in $REFINERY_HOME/inbox/reference/<name>/ (any format the text inbox "
        "accepts): what reference_lm trains on and the positive class of quality_classifier. Not "
        "materialized by Refinery: observed, its version a fingerprint of its files, so the models retrain "
        "when it changes; the sample ships one ('curated').",
    )(_observe_reference)


@dg.asset(
    name=names.REFERENCE_LM,
    deps=[reference_corpus],
    group_name=MODELS_GROUP,
    kinds={"kenlm"},
    automation_condition=MODEL,
    check_specs=[
        dg.AssetCheckSpec(
            "bucket_cutoffs_increase",
            asset=names.REFERENCE_LM,
            blocking=True,
            description="The held-out reference perplexities give finite, increasing p30 < p60 "
            "cutoffs (used by bucket_reference: reference).",
        )
    ],
    description="A KenLM n-gram model (order from the kenlm resource, 5 by default) trained with lmplz on "
    "the reference corpus, then build_binary. A held-out tenth of the reference documents gives the "
    "perplexity percentiles perplexity_scored cuts its head/middle/tail buckets from. Written to "
    "models/reference_lm/reference_lm-o<order>-<sha12>.binary. When the kenlm resource names a model file, "
    "that file is registered instead (checked, percentiles taken on the whole reference corpus).",
)
def reference_lm(
    context: dg.AssetExecutionContext,
    config: ReferenceLMConfig,
    refinery: RefineryHome,
    kenlm: KenLMResource,
) -> dg.MaterializeResult:
    layout = refinery.layout()
    if kenlm.model_path:
        result = register_external_lm(layout, config, kenlm.model_path, kenlm.order)
    else:
        result = train_reference_lm(layout, config, kenlm.order)
    context.log.info(
        f"reference_lm: {'trained' if result.trained else 'registered'} {result.artifact.path} "
        f"({result.train_tokens} training tokens) in {result.seconds:.2f}s"
    )
    return materialize_result(result.report(), result.checks())


@dg.asset(
    name=names.QUALITY_CLASSIFIER,
    deps=[reference_corpus, names.CLEAN_DOCUMENTS],
    group_name=MODELS_GROUP,
    kinds={"pytorch"},
    automation_condition=MODEL,
    check_specs=[
        dg.AssetCheckSpec(
            "heldout_auc",
            asset=names.QUALITY_CLASSIFIER,
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
    result = train_quality_classifier(refinery.layout(), refinery.storage(), config)
    m = result.metrics
    context.log.info(
        f"quality_classifier: {result.artifact.path}, held-out accuracy {m['heldout_accuracy']}, "
        f"AUC {m['heldout_auc']}"
    )
    return materialize_result(result.report(), result.checks())
