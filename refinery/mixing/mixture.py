"""A token-budgeted sample of the corpus that follows domain weights.

Each domain's share of the budget is its weight times the budget. A domain that has fewer
tokens than its share is repeated: every document once per full epoch, then a seeded random
subset for the fractional rest, so no document is seen k+1 times before every other has been
seen k times. Repeating is reported as epochs per domain, with a warning above ``warn_epochs``
(Muennighoff et al. 2023, "Scaling Data-Constrained Language Models": up to about four epochs
cost little, beyond that returns fall off fast). ``max_epochs`` caps a domain instead and gives
its excess to the other domains in proportion to their weights.

The output lists documents, not text: ``domain``, ``source``, ``id`` and ``row`` (the document's
row in ``pretrain_corpus/<source>.parquet``), its ``tokens`` and the ``epoch`` of each copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field


class MixtureParams(BaseModel):
    token_budget: int | None = Field(
        None, description="Whitespace tokens in the mixture; default: all tokens of the eligible documents."
    )
    weights: str = Field(
        "weight",
        description="Column of domain_weights to follow: weight (the chosen method), dsir, doremi, natural "
        "or uniform.",
    )
    manual_weights: dict[str, float] | None = Field(
        None, description="Explicit weights per domain (override)."
    )
    split: str | None = Field("train", description="Draw only from this split of dataset_splits (None: all).")
    within_domain: Literal["random", "importance"] = Field(
        "random",
        description="Which documents fill a partial epoch: at random, or by DSIR importance (Gumbel top-k on "
        "the per-document log weights domain_weights stored).",
    )
    warn_epochs: float = Field(4.0, description="Warn when a domain is repeated more than this many times.")
    max_epochs: float | None = Field(
        None, description="Cap epochs per domain; the excess goes to the others."
    )
    seed: int = Field(0, description="Seeds which documents fill a partial epoch.")


@dataclass
class DomainPlan:
    domain: str
    weight: float  # after capping and redistribution
    requested_weight: float
    available_tokens: int
    documents: int
    target_tokens: float
    tokens: int = 0
    rows: int = 0

    @property
    def epochs(self) -> float:
        return self.tokens / self.available_tokens if self.available_tokens else 0.0


def normalise(weights: dict[str, float]) -> dict[str, float]:
    bad = {k: v for k, v in weights.items() if not np.isfinite(v) or v < 0}
    if bad:
        raise ValueError(f"domain weights must be finite and ≥ 0, got {bad}")
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("domain weights sum to zero")
    return {k: v / total for k, v in weights.items()}


def plan_budget(
    weights: dict[str, float], available: dict[str, int], budget: int, max_epochs: float | None
) -> dict[str, float]:
    """Tokens per domain: weight × budget; empty domains and (if capped) domains beyond
    ``max_epochs`` give their excess to the others in proportion to weight."""
    w = {d: weights.get(d, 0.0) for d in available}
    fixed: dict[str, float] = {d: 0.0 for d in available if available[d] == 0}
    while True:
        free = {d: v for d, v in w.items() if d not in fixed}
        free_total = sum(free.values())
        remaining = budget - sum(fixed.values())
        if not free or free_total <= 0:
            return {d: fixed.get(d, 0.0) for d in available}
        targets = {d: remaining * v / free_total for d, v in free.items()}
        over = {d for d, t in targets.items() if max_epochs is not None and t > max_epochs * available[d]}
        if not over:
            return {**targets, **fixed}
        for d in over:
            fixed[d] = max_epochs * available[d]


def sample_domain(
    tokens: np.ndarray, target: float, rng: np.random.Generator, log_weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(document index, epoch) of every copy: whole epochs, then a prefix of a random order for
    the rest (uniform, or without replacement ∝ exp(log_weights): importance resampling)."""
    total = int(tokens.sum())
    if total == 0 or target <= 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    full = int(target // total)
    rest = target - full * total
    if log_weights is None:
        order = rng.permutation(len(tokens))
    else:
        order = np.argsort(
            -(np.asarray(log_weights, dtype=float) + rng.gumbel(size=len(tokens))), kind="stable"
        )
    cum = np.cumsum(tokens[order])
    # The prefix whose token count is closest to the rest (never empty when rest > 0).
    cut = int(np.searchsorted(cum, rest, side="left"))
    if cut < len(cum) and cut > 0 and abs(cum[cut - 1] - rest) <= abs(cum[cut] - rest):
        take = cut
    else:
        take = min(cut + 1, len(cum))
    if rest <= 0:
        take = 0
    index = np.concatenate([np.tile(np.arange(len(tokens)), full), order[:take]])
    epoch = np.concatenate([np.repeat(np.arange(full), len(tokens)), np.full(take, full)])
    return index.astype(np.int64), epoch.astype(np.int64)


def build_mixture(
    docs: pd.DataFrame, weights: dict[str, float], params: MixtureParams
) -> tuple[pd.DataFrame, list[DomainPlan]]:
    """``docs``: domain, source, id, row, tokens (and ``log_weight`` for importance) per eligible
    document. Returns the
    mixture rows (domain-major order; the schedule decides training order) and per-domain plans."""
    if params.within_domain == "importance" and "log_weight" not in docs.columns:
        raise ValueError("within_domain='importance' needs DSIR log weights: run domain_weights with dsir")
    requested = normalise(weights)
    unknown = sorted(set(requested) - set(docs["domain"]))
    if unknown:
        raise ValueError(f"weights name domains that have no documents: {unknown}")
    available = docs.groupby("domain")["tokens"].sum().astype(int).to_dict()
    counts = docs.groupby("domain").size().to_dict()
    budget = params.token_budget if params.token_budget is not None else int(sum(available.values()))
    if budget < 0:
        raise ValueError("token_budget must be ≥ 0")
    targets = plan_budget(requested, available, budget, params.max_epochs)
    plans, parts = [], []
    for i, domain in enumerate(sorted(available)):
        part = docs[docs["domain"] == domain].sort_values(["source", "row"])
        rng = np.random.default_rng([params.seed, i])
        log_weights = (
            part["log_weight"].to_numpy(dtype=float) if params.within_domain == "importance" else None
        )
        index, epoch = sample_domain(part["tokens"].to_numpy(), targets[domain], rng, log_weights)
        chosen = part.iloc[index].assign(epoch=epoch)
        parts.append(chosen)
        plans.append(
            DomainPlan(
                domain,
                targets[domain] / budget if budget else 0.0,
                requested.get(domain, 0.0),
                available[domain],
                counts[domain],
                targets[domain],
                int(chosen["tokens"].sum()),
                len(chosen),
            )
        )
    columns = ["domain", "source", "id", "row", "tokens", "epoch"]
    extra = [c for c in docs.columns if c not in columns]
    mixture = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=columns)
    return mixture[columns + extra], plans
