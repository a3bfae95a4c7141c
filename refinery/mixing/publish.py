"""domain_weights and pretrain_mixture end to end: compute, write their tables, say what happened.

Both are unpartitioned: they decide across every text source. Each function here writes the
asset's tables (atomically, stamped with the parameters) and returns a
:class:`refinery.metadata.Published` with what a user checks first: the weights and the losses
behind them, the plots, and for the mixture the epochs per domain with a warning above
``warn_epochs``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa

from refinery import markdown
from refinery.metadata import FilePath, Json, Markdown, Published, bullet_list
from refinery.mixing.corpus import iter_corpus
from refinery.mixing.mixture import MixtureParams, build_mixture
from refinery.mixing.plots import trajectory_plot, weights_plot
from refinery.mixing.weights import DomainWeightsParams, WeightsResult, compute_domain_weights
from refinery.names import (
    DATASET_SPLITS,
    DOMAIN_WEIGHTS,
    DOMAIN_WEIGHTS_DOCUMENTS,
    DOMAIN_WEIGHTS_TRAJECTORY,
    PRETRAIN_MIXTURE,
)
from refinery.paths import Layout
from refinery.plots import markdown_image
from refinery.storage import Storage
from refinery.table_store import read_frame, shown

MIXTURE_COLUMNS = ["domain", "source", "id", "row", "tokens", "perplexity"]
WEIGHT_COLUMNS = ["natural", "uniform", "dsir", "doremi", "weight"]


def _table_md(frame: pd.DataFrame, columns: list[str]) -> str:
    present = [c for c in columns if c in frame.columns]
    return markdown.table(present, frame[present].itertuples(index=False))


def _write(storage: Storage, asset: str, frame: pd.DataFrame, stamp: dict, name: str | None = None):
    return storage.write_table(asset, pa.Table.from_pandas(frame, preserve_index=False), stamp, name)


def publish_domain_weights(
    storage: Storage, layout: Layout, params: DomainWeightsParams, stamp: dict
) -> Published:
    """Weights per domain (DSIR, DoReMi, natural, uniform), plus DSIR's per-document log weights
    and DoReMi's trajectory as tables of their own."""
    result = compute_domain_weights(storage, layout, params)
    table = result.table
    path = _write(storage, DOMAIN_WEIGHTS, table, stamp)
    meta = {
        "domains": len(table),
        "use": params.use,
        "weights": Markdown(_table_md(table.round(4), ["domain", "documents", "tokens", *WEIGHT_COLUMNS])),
        "weights_json": Json(dict(zip(table["domain"], table["weight"].round(6), strict=False))),
        "plot_weights": Markdown(markdown_image(weights_plot(table), "domain weights")),
        "output": FilePath.of(shown(storage, path)),
        "parameters": Json(params.model_dump()),
        "notes": bullet_list(result.notes),
    }
    meta.update(_dsir_outputs(storage, result, stamp))
    meta.update(_doremi_outputs(storage, result, stamp))
    weights = ", ".join(f"{d}={w:.3f}" for d, w in zip(table["domain"], table["weight"], strict=True))
    return Published(
        meta,
        info=[f"domain weights ({params.use}): {weights}"],
        warnings=list(result.notes),
        schema=pa.Schema.from_pandas(table, preserve_index=False),
        rows=len(table),
    )


def _dsir_outputs(storage: Storage, result: WeightsResult, stamp: dict) -> dict:
    if result.documents is None:
        return {}
    path = _write(storage, DOMAIN_WEIGHTS_DOCUMENTS, result.documents, stamp)
    return {
        "dsir_document_weights": FilePath.of(shown(storage, path)),
        "dsir_target_documents": result.target.documents,
        "dsir_target_quarantined": result.target.quarantined,
        "dsir_by_domain": Markdown(
            _table_md(
                result.table.round(4), ["domain", "dsir_mean_log_weight", "dsir_resampled_documents", "dsir"]
            )
        ),
    }


def _doremi_outputs(storage: Storage, result: WeightsResult, stamp: dict) -> dict:
    if result.doremi is None:
        return {}
    r = result.doremi
    trajectory = pd.DataFrame(r.trajectory)
    path = _write(storage, DOMAIN_WEIGHTS_TRAJECTORY, trajectory, stamp)
    columns = ["domain", "doremi_reference_loss", "doremi_proxy_loss", "doremi_mean_excess", "doremi"]
    return {
        "doremi_losses": Markdown(_table_md(result.table.round(4), columns)),
        "doremi_trajectory": FilePath.of(shown(storage, path)),
        "plot_doremi_trajectory": Markdown(markdown_image(trajectory_plot(trajectory), "trajectory")),
        "doremi_seconds": round(r.seconds, 2),
        "doremi_model_parameters": r.parameters,
    }


def mixture_weights(storage: Storage, params: MixtureParams) -> dict[str, float]:
    """The weights the mixture follows: given by hand, or a column of domain_weights."""
    if params.manual_weights:
        return dict(params.manual_weights)
    table = read_frame(storage, DOMAIN_WEIGHTS)
    if params.weights not in table.columns:
        raise ValueError(f"domain_weights has no column {params.weights!r} (has {list(table.columns)})")
    return dict(zip(table["domain"], table[params.weights].fillna(0.0), strict=True))


def mixture_candidates(storage: Storage, params: MixtureParams) -> pd.DataFrame:
    """Every corpus document the mixture may draw (one row each, no text), with its DSIR log
    weight when sampling by importance, restricted to the chosen split."""
    domain_column = storage.table_provenance(DOMAIN_WEIGHTS)["params"].get("domain_column")
    frames = [
        b.frame.assign(source=b.source)[MIXTURE_COLUMNS]
        for b in iter_corpus(storage, columns=["perplexity"], domain_column=domain_column, with_text=False)
    ]
    docs = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=MIXTURE_COLUMNS)
    docs["id"] = docs["id"].astype(str)
    if params.within_domain == "importance":
        importance = read_frame(storage, DOMAIN_WEIGHTS_DOCUMENTS, columns=["source", "id", "log_weight"])
        docs = docs.merge(importance, on=["source", "id"], how="left")
        if docs["log_weight"].isna().any():
            raise ValueError("some documents have no DSIR weight: re-materialize domain_weights")
    if params.split is not None:
        splits = read_frame(storage, DATASET_SPLITS, columns=["source", "id", "split"])
        docs = docs.merge(splits, on=["source", "id"], how="left")
        unassigned = int(docs["split"].isna().sum())
        if unassigned:
            raise ValueError(f"{unassigned} corpus documents have no split: re-materialize dataset_splits")
        docs = docs[docs["split"] == params.split].drop(columns=["split"])
    return docs


def publish_mixture(storage: Storage, params: MixtureParams, stamp: dict) -> Published:
    """A token-budgeted sample following the weights; a domain with no documents in the split gives
    its weight to the rest, and one repeated more than ``warn_epochs`` times is warned about."""
    weights = mixture_weights(storage, params)
    docs = mixture_candidates(storage, params)
    warnings = []
    present = set(docs["domain"])
    absent = sorted(d for d, w in weights.items() if d not in present and w > 0)
    if absent:
        warnings.append(
            f"domains {absent} have no documents in split {params.split!r}: their weight goes to the rest"
        )
    weights = {d: w for d, w in weights.items() if d in present} or weights
    mixture, plans = build_mixture(docs, weights, params)
    mixture["perplexity"] = pd.to_numeric(mixture["perplexity"], errors="coerce").astype("float64")
    mixture = mixture.drop(columns=[c for c in ("log_weight",) if c in mixture.columns]).reset_index(
        drop=True
    )
    table = pa.Table.from_pandas(mixture, preserve_index=False)
    path = storage.write_table(PRETRAIN_MIXTURE, table, stamp)
    rows = []
    for p in plans:
        flag = p.epochs > params.warn_epochs
        if flag:
            warnings.append(
                f"domain {p.domain!r} is repeated {p.epochs:.1f} times "
                f"({p.available_tokens:,} tokens available "
                f"for a share of {p.target_tokens:,.0f}): more than warn_epochs={params.warn_epochs:g}; "
                "consider max_epochs, a lower weight, or more data"
            )
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
    headers = [
        "domain",
        "weight asked",
        "weight used",
        "available tokens",
        "target tokens",
        "tokens",
        "copies",
        "epochs",
        "",
    ]
    meta = {
        "tokens": total,
        "token_budget": params.token_budget if params.token_budget is not None else total,
        "documents": len(mixture),
        "distinct_documents": int(mixture[["source", "id"]].drop_duplicates().shape[0])
        if len(mixture)
        else 0,
        "per_domain": Markdown(markdown.table(headers, rows)),
        "max_epochs_seen": round(max((p.epochs for p in plans), default=0.0), 3),
        "repetition_warnings": bullet_list([w for w in warnings if "repeated" in w]),
        "output": FilePath.of(shown(storage, path)),
        "parameters": Json(params.model_dump()),
        "weights_followed": Json({k: round(float(v), 6) for k, v in weights.items()}),
        "preview": Markdown(_table_md(mixture.head(8), ["domain", "source", "id", "tokens", "epoch"])),
        "uses_perplexity": bool(np.isfinite(mixture["perplexity"]).all()) if len(mixture) else False,
    }
    return Published(meta, warnings=warnings, schema=table.schema, rows=len(mixture))
