"""``domain_weights`` end to end: one or two passes over the corpus, DSIR and DoReMi, one table.

Pass 1 counts documents, tokens and bytes per domain and fits DSIR's raw n-gram distribution.
Pass 2 scores every document's DSIR importance and draws DoReMi's per-domain byte sample (a
deterministic hash of the document key against the share that fits ``max_bytes_per_domain``, so
the sample is spread over the whole domain rather than its first file). The result is a table
with one row per domain and a column per method (``natural``: share of tokens; ``uniform``;
``dsir``; ``doremi``), plus ``weight``, the method chosen by ``use``.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, Field, create_model, field_validator

from refinery.ids import doc_key
from refinery.mixing.corpus import iter_corpus
from refinery.mixing.doremi import DomainBytes, DoremiParams, DoremiResult, run_doremi
from refinery.mixing.dsir import DsirDomains, DsirParams, ImportanceModel, domain_weights_from_documents
from refinery.mixing.target import TargetStats, target_batches
from refinery.paths import Layout
from refinery.storage import Storage

METHODS = ("dsir", "doremi")
log = logging.getLogger(__name__)


class _WeightsBase(BaseModel):
    domain_column: str | None = Field(
        "domain", description="Corpus column naming a document's domain where present; else its source."
    )
    methods: list[str] = Field(["dsir", "doremi"], description=f"Methods to run, of {list(METHODS)}.")
    use: Literal["doremi", "dsir", "natural", "uniform"] = Field(
        "doremi",
        description="The method whose weights fill the `weight` column that pretrain_mixture follows.",
    )
    target_set: str = Field("target", description="DSIR target: folder name under inbox/target/.")

    @field_validator("methods")
    @classmethod
    def _known(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(METHODS))
        if unknown:
            raise ValueError(f"unknown methods {unknown}; choose from {list(METHODS)}")
        return value

    def dsir(self) -> DsirParams:
        return DsirParams(**_unprefixed(self, "dsir_"))

    def doremi(self) -> DoremiParams:
        return DoremiParams(**_unprefixed(self, "doremi_"))


def _unprefixed(params: BaseModel, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in params.model_dump().items() if k.startswith(prefix)}


def _prefixed(prefix: str, model: type[BaseModel]) -> dict:
    return {f"{prefix}{name}": (f.annotation, f) for name, f in model.model_fields.items()}


# One flat model (Dagster config cannot nest plain pydantic models): dsir_* and doremi_* fields.
DomainWeightsParams = create_model(
    "DomainWeightsParams",
    __base__=_WeightsBase,
    __doc__="Which weights to estimate and how; dsir_* and doremi_* are the two methods' parameters.",
    **_prefixed("dsir_", DsirParams),
    **_prefixed("doremi_", DoremiParams),
)


@dataclass
class WeightsResult:
    table: pd.DataFrame  # one row per domain
    documents: pd.DataFrame | None  # source, id, domain, log_weight (DSIR), when DSIR ran
    dsir: DsirDomains | None
    doremi: DoremiResult | None
    target: TargetStats | None
    notes: list[str] = field(default_factory=list)


def _sample_share(key: str, share: float, seed: int) -> bool:
    if share >= 1:
        return True
    digest = hashlib.blake2b(f"{seed}\0{key}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 < share


def compute_domain_weights(storage: Storage, layout: Layout, params) -> WeightsResult:
    """Run the configured methods over every partition of ``pretrain_corpus``."""
    notes: list[str] = []
    dsir_params, doremi_params = params.dsir(), params.doremi()
    do_dsir = "dsir" in params.methods
    do_doremi = "doremi" in params.methods
    target_stats: TargetStats | None = None
    model: ImportanceModel | None = None
    if do_dsir:
        target_stats = TargetStats(str(layout.inbox_source("target", params.target_set)))
        try:
            model = ImportanceModel(dsir_params)
            model.fit_target(target_batches(layout, params.target_set, target_stats))
            if not model.target_counts.any():
                raise FileNotFoundError(f"the target set {target_stats.folder} holds no readable documents")
        except FileNotFoundError as err:
            if params.use == "dsir":
                raise
            notes.append(f"DSIR skipped: {err}")
            do_dsir, model = False, None

    docs_per_domain: dict[str, int] = defaultdict(int)
    tokens_per_domain: dict[str, int] = defaultdict(int)
    bytes_per_domain: dict[str, int] = defaultdict(int)
    for batch in iter_corpus(storage, domain_column=params.domain_column):
        f = batch.frame
        sizes = pc.binary_length(pa.array(f["text"].tolist(), type=pa.large_string())).to_numpy(
            zero_copy_only=False
        )
        grouped = f.assign(bytes=sizes).groupby("domain", sort=False)
        for domain, row in grouped.agg(
            n=("id", "size"), tokens=("tokens", "sum"), nbytes=("bytes", "sum")
        ).iterrows():
            docs_per_domain[domain] += int(row["n"])
            tokens_per_domain[domain] += int(row["tokens"])
            bytes_per_domain[domain] += int(row["nbytes"])
        if model is not None:
            model.fit_raw(f["text"].tolist())
    domains = sorted(docs_per_domain)
    if not domains:
        raise ValueError(
            "pretrain_corpus has no documents: materialize the text pipeline for some source first"
        )

    share = {d: doremi_params.max_bytes_per_domain / max(bytes_per_domain[d], 1) for d in domains}
    sampled: dict[str, list[str]] = defaultdict(list)
    doc_rows: list[pd.DataFrame] = []
    ratio = model.log_ratio if model is not None else None
    if model is not None or do_doremi:
        for batch in iter_corpus(storage, domain_column=params.domain_column):
            f = batch.frame
            if model is not None:
                doc_rows.append(
                    pd.DataFrame(
                        {
                            "source": batch.source,
                            "id": f["id"].astype(str),
                            "domain": f["domain"].astype(str),
                            "tokens": f["tokens"],
                            "log_weight": model.log_weights(f["text"].tolist(), ratio),
                        }
                    )
                )
            if do_doremi:
                for doc_id, domain, text in zip(f["id"], f["domain"], f["text"], strict=True):
                    if _sample_share(doc_key(batch.source, doc_id), share[domain], doremi_params.seed):
                        sampled[domain].append(text)

    table = pd.DataFrame(
        {
            "domain": domains,
            "documents": [docs_per_domain[d] for d in domains],
            "tokens": [tokens_per_domain[d] for d in domains],
            "bytes": [bytes_per_domain[d] for d in domains],
        }
    )
    total_tokens = table["tokens"].sum()
    table["natural"] = table["tokens"] / total_tokens if total_tokens else 1 / len(domains)
    table["uniform"] = 1 / len(domains)

    dsir_result, documents = None, None
    if model is not None:
        documents = pd.concat(doc_rows, ignore_index=True)
        dsir_result = domain_weights_from_documents(
            documents["log_weight"].to_numpy(),
            documents["domain"].to_numpy(),
            documents["tokens"].to_numpy(),
            dsir_params,
        )
        by = dict(zip(dsir_result.domains, dsir_result.weights, strict=True))
        table["dsir"] = table["domain"].map(by)
        table["dsir_mean_log_weight"] = table["domain"].map(
            dict(zip(dsir_result.domains, dsir_result.mean_log_weight, strict=True))
        )
        table["dsir_resampled_documents"] = table["domain"].map(
            dict(zip(dsir_result.domains, dsir_result.resampled_documents, strict=True))
        )

    doremi_result = None
    if do_doremi:
        with_text = [d for d in domains if sampled[d]]
        if len(with_text) < 2:
            notes.append(f"DoReMi skipped: it needs at least two domains with text, found {len(with_text)}")
            if params.use == "doremi":
                raise ValueError(notes[-1])
        else:
            data = [
                DomainBytes.from_texts(
                    d,
                    sampled[d],
                    tokens_per_domain[d],
                    doremi_params.max_bytes_per_domain,
                    doremi_params.eval_fraction,
                    doremi_params.seed + i,
                )
                for i, d in enumerate(with_text)
            ]
            doremi_result = run_doremi(data, doremi_params)
            for col, values in (
                ("doremi", doremi_result.weights),
                ("doremi_reference_loss", doremi_result.reference_loss),
                ("doremi_proxy_loss", doremi_result.proxy_loss),
                ("doremi_mean_excess", doremi_result.mean_excess),
            ):
                table[col] = table["domain"].map(dict(zip(doremi_result.domains, values, strict=True)))
            table["doremi"] = table["doremi"].fillna(0.0)
    if params.use not in table.columns:
        raise ValueError(
            f"use={params.use!r} but that method did not run ({'; '.join(notes) or 'not in methods'})"
        )
    table["weight"] = table[params.use] / table[params.use].sum()
    return WeightsResult(table, documents, dsir_result, doremi_result, target_stats, notes)
