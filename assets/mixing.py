"""domain_weights and pretrain_mixture: how much of each domain, and which documents, across sources."""

import dagster as dg

from assets.automation import EVERY_INTERVAL, STAGE
from assets.factory import config_class, publish
from refinery import names
from refinery.kernel.report import provenance
from refinery.mixing.mixture import MixtureParams
from refinery.mixing.publish import publish_domain_weights, publish_mixture
from refinery.mixing.weights import DomainWeightsParams
from resources import RefineryHome

DomainWeightsConfig = config_class(DomainWeightsParams, names.DOMAIN_WEIGHTS)
MixtureConfig = config_class(MixtureParams, names.PRETRAIN_MIXTURE)


@dg.asset(
    name=names.DOMAIN_WEIGHTS,
    automation_condition=EVERY_INTERVAL,
    deps=[names.PRETRAIN_CORPUS],
    group_name="mixing",
    kinds={"python", "parquet", "pytorch"},
    description="Weights per domain (a text source, or a `domain` column) by two methods: DSIR importance "
    "against the target set in inbox/target/<target_set>/ (hashed n-grams, resampled, aggregated to "
    "domains) and DoReMi (a small byte-level proxy transformer trained against a reference with "
    "multiplicative-weights updates on per-domain excess loss). Also natural (token share) and uniform. "
    "`weight` is the method chosen by `use`. Per-document DSIR log weights and DoReMi's trajectory are "
    "stored beside it.",
)
def domain_weights(
    context: dg.AssetExecutionContext, config: DomainWeightsConfig, refinery: RefineryHome
) -> dg.MaterializeResult:
    stamp = provenance(names.DOMAIN_WEIGHTS, "all", config)
    return publish(context, publish_domain_weights(refinery.storage(), refinery.layout(), config, stamp))


@dg.asset(
    name=names.PRETRAIN_MIXTURE,
    automation_condition=STAGE,
    deps=[names.DOMAIN_WEIGHTS, names.DATASET_SPLITS],
    group_name="mixing",
    kinds={"python", "parquet"},
    description="A token-budgeted sample of the corpus (the train split by default) following the domain "
    "weights: whole epochs of a domain, then a random (or, with within_domain importance, DSIR-weighted) "
    "part for the rest. Lists documents (domain, source, id, row, tokens, epoch), not text. Epochs per "
    "domain are reported; a domain repeated more than warn_epochs times is warned about.",
)
def pretrain_mixture(
    context: dg.AssetExecutionContext, config: MixtureConfig, refinery: RefineryHome
) -> dg.MaterializeResult:
    stamp = provenance(names.PRETRAIN_MIXTURE, "all", config)
    return publish(context, publish_mixture(refinery.storage(), config, stamp))
