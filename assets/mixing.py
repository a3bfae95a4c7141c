"""domain_weights and pretrain_mixture: how much of each domain, and which documents, across sources."""

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from assets.metadata import column_schema, provenance
from assets.text_corpus import pretrain_corpus
from refinery import markdown
from refinery.mixing.corpus import iter_corpus, output_path, read_provenance, require_output, write_table
from refinery.mixing.mixture import MixtureParams, build_mixture
from refinery.mixing.plots import markdown_image, trajectory_plot, weights_plot
from refinery.mixing.weights import DomainWeightsParams, compute_domain_weights
from resources import RefineryHome

DOCUMENT_WEIGHTS = "domain_weights_documents"
TRAJECTORY = "domain_weights_trajectory"
# Declared by key: dataset_splits lives in assets.schedule, which imports this module.
DATASET_SPLITS = dg.AssetKey("dataset_splits")


class DomainWeightsConfig(dg.Config, DomainWeightsParams):
    pass


class MixtureConfig(dg.Config, MixtureParams):
    pass


def _table_md(frame: pd.DataFrame, columns: list[str]) -> str:
    present = [c for c in columns if c in frame.columns]
    return markdown.table(present, frame[present].itertuples(index=False))


@dg.asset(
    deps=[pretrain_corpus],
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
    layout, storage = refinery.layout(), refinery.storage()
    params = DomainWeightsParams(**config.model_dump())
    result = compute_domain_weights(storage, layout, params)
    for note in result.notes:
        context.log.warning(note)
    stamp = provenance("domain_weights", "all", params)
    path = write_table(
        pa.Table.from_pandas(result.table, preserve_index=False),
        output_path(storage, "domain_weights"),
        stamp,
    )
    meta = {
        "dagster/row_count": len(result.table),
        "dagster/column_schema": column_schema(pa.Schema.from_pandas(result.table, preserve_index=False)),
        "domains": len(result.table),
        "use": params.use,
        "weights": dg.MetadataValue.md(
            _table_md(
                result.table.round(4),
                ["domain", "documents", "tokens", "natural", "uniform", "dsir", "doremi", "weight"],
            )
        ),
        "weights_json": dg.MetadataValue.json(
            dict(zip(result.table["domain"], result.table["weight"].round(6), strict=False))
        ),
        "plot_weights": dg.MetadataValue.md(markdown_image(weights_plot(result.table), "domain weights")),
        "output": dg.MetadataValue.path(str(path)),
        "parameters": dg.MetadataValue.json(params.model_dump()),
        "notes": dg.MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "_none_"),
    }
    if result.documents is not None:
        doc_path = write_table(
            pa.Table.from_pandas(result.documents, preserve_index=False),
            output_path(storage, DOCUMENT_WEIGHTS),
            stamp,
        )
        meta["dsir_document_weights"] = dg.MetadataValue.path(str(doc_path))
        meta["dsir_target_documents"] = result.target.documents
        meta["dsir_target_quarantined"] = result.target.quarantined
        meta["dsir_by_domain"] = dg.MetadataValue.md(
            _table_md(
                result.table.round(4), ["domain", "dsir_mean_log_weight", "dsir_resampled_documents", "dsir"]
            )
        )
    if result.doremi is not None:
        r = result.doremi
        trajectory = pd.DataFrame(r.trajectory)
        traj_path = write_table(
            pa.Table.from_pandas(trajectory, preserve_index=False), output_path(storage, TRAJECTORY), stamp
        )
        meta.update(
            {
                "doremi_losses": dg.MetadataValue.md(
                    _table_md(
                        result.table.round(4),
                        [
                            "domain",
                            "doremi_reference_loss",
                            "doremi_proxy_loss",
                            "doremi_mean_excess",
                            "doremi",
                        ],
                    )
                ),
                "doremi_trajectory": dg.MetadataValue.path(str(traj_path)),
                "plot_doremi_trajectory": dg.MetadataValue.md(
                    markdown_image(trajectory_plot(trajectory), "trajectory")
                ),
                "doremi_seconds": round(r.seconds, 2),
                "doremi_model_parameters": r.parameters,
            }
        )
    context.log.info(
        f"domain weights ({params.use}): "
        + ", ".join(
            f"{d}={w:.3f}" for d, w in zip(result.table["domain"], result.table["weight"], strict=True)
        )
    )
    return dg.MaterializeResult(metadata=meta)


@dg.asset(
    deps=[domain_weights, DATASET_SPLITS],
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
    storage = refinery.storage()
    params = MixtureParams(**config.model_dump())
    weights_table = pd.read_parquet(require_output(storage, "domain_weights"))
    domain_column = read_provenance(output_path(storage, "domain_weights"))["params"].get("domain_column")
    if params.manual_weights:
        weights = dict(params.manual_weights)
    else:
        if params.weights not in weights_table.columns:
            raise ValueError(
                f"domain_weights has no column {params.weights!r} (has {list(weights_table.columns)})"
            )
        weights = dict(zip(weights_table["domain"], weights_table[params.weights].fillna(0.0), strict=True))
    frames = [
        b.frame.assign(source=b.source)[["domain", "source", "id", "row", "tokens", "perplexity"]]
        for b in iter_corpus(storage, columns=["perplexity"], domain_column=domain_column, with_text=False)
    ]
    docs = (
        pd.concat(frames, ignore_index=True)
        if frames
        else pd.DataFrame(columns=["domain", "source", "id", "row", "tokens", "perplexity"])
    )
    docs["id"] = docs["id"].astype(str)
    if params.within_domain == "importance":
        importance = pd.read_parquet(
            require_output(storage, DOCUMENT_WEIGHTS), columns=["source", "id", "log_weight"]
        )
        docs = docs.merge(importance, on=["source", "id"], how="left")
        if docs["log_weight"].isna().any():
            raise ValueError("some documents have no DSIR weight: re-materialize domain_weights")
    if params.split is not None:
        splits = pd.read_parquet(require_output(storage, "dataset_splits"), columns=["source", "id", "split"])
        docs = docs.merge(splits, on=["source", "id"], how="left")
        unassigned = int(docs["split"].isna().sum())
        if unassigned:
            raise ValueError(f"{unassigned} corpus documents have no split: re-materialize dataset_splits")
        docs = docs[docs["split"] == params.split].drop(columns=["split"])
    present = set(docs["domain"])
    absent = sorted(d for d, w in weights.items() if d not in present and w > 0)
    if absent:
        context.log.warning(
            f"domains {absent} have no documents in split {params.split!r}: their weight goes to the rest"
        )
    weights = {d: w for d, w in weights.items() if d in present} or weights
    mixture, plans = build_mixture(docs, weights, params)
    mixture["perplexity"] = pd.to_numeric(mixture["perplexity"], errors="coerce").astype("float64")
    mixture = mixture.drop(columns=[c for c in ("log_weight",) if c in mixture.columns])
    table = pa.Table.from_pandas(mixture.reset_index(drop=True), preserve_index=False)
    path = write_table(
        table, output_path(storage, "pretrain_mixture"), provenance("pretrain_mixture", "all", params)
    )
    rows, warnings = [], []
    for p in plans:
        flag = p.epochs > params.warn_epochs
        if flag:
            warnings.append(
                f"domain {p.domain!r} is repeated {p.epochs:.1f} times "
                f"({p.available_tokens:,} tokens available "
                f"for a share of {p.target_tokens:,.0f}): more than warn_epochs={params.warn_epochs:g}; "
                "consider max_epochs, a lower weight, or more data"
            )
            context.log.warning(warnings[-1])
        rows.append(
            (
                p.domain,
                round(p.requested_weight, 4),
                round(p.weight, 4),
                p.available_tokens,
                round(p.target_tokens),
                p.tokens,
                p.rows,
                round(p.epochs, 2),
                "⚠" if flag else "",
            )
        )
    total = int(mixture["tokens"].sum()) if len(mixture) else 0
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(mixture),
            "dagster/column_schema": column_schema(table.schema),
            "tokens": total,
            "token_budget": params.token_budget if params.token_budget is not None else total,
            "documents": len(mixture),
            "distinct_documents": int(mixture[["source", "id"]].drop_duplicates().shape[0])
            if len(mixture)
            else 0,
            "per_domain": dg.MetadataValue.md(
                markdown.table(
                    [
                        "domain",
                        "weight asked",
                        "weight used",
                        "available tokens",
                        "target tokens",
                        "tokens",
                        "copies",
                        "epochs",
                        "",
                    ],
                    rows,
                )
            ),
            "max_epochs_seen": round(max((p.epochs for p in plans), default=0.0), 3),
            "repetition_warnings": dg.MetadataValue.md("\n".join(f"- {w}" for w in warnings) or "_none_"),
            "output": dg.MetadataValue.path(str(path)),
            "parameters": dg.MetadataValue.json(params.model_dump()),
            "weights_followed": dg.MetadataValue.json({k: round(float(v), 6) for k, v in weights.items()}),
            "preview": dg.MetadataValue.md(
                _table_md(mixture.head(8), ["domain", "source", "id", "tokens", "epoch"])
            ),
            "uses_perplexity": bool(np.isfinite(mixture["perplexity"]).all()) if len(mixture) else False,
        }
    )
