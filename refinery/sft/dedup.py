"""Exact and near-duplicate prompts, with the text pipeline's dedup library and index semantics.

Two records asking the same thing add little: the model sees the same instruction answered
twice (or, worse, answered two contradicting ways). The prompt is compared, through the same
code as documents: :class:`~refinery.dedup.exact.ExactDeduper` (content hash after
normalisation) and :class:`~refinery.dedup.fuzzy.FuzzyDeduper` (MinHash-LSH, verified by
estimated Jaccard), against persistent indexes of every SFT partition materialized before, first
come first served, re-materializing a partition withdrawing its own claims first.

Demonstrations (instruction, conversation) and preference data (preference, ranked) have
separate indexes: one prompt in an SFT set and in a DPO set is normal, not a duplicate. The
indexes live beside the text pipeline's but apart from them (``index/sft_*``, or the
``<namespace>:sft-<group>`` keys in Redis), so SFT sources never withdraw claims of text
sources with the same name.

Prompts are short, so shingles are word 3-grams by default (5-grams on a ten-word prompt leave
too few shingles for one edited word to keep the similarity up).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from refinery.batch import BatchResult
from refinery.dedup.backends import BACKENDS, redis_client, redis_connection
from refinery.dedup.exact import ExactDeduper, ExactDedupParams
from refinery.dedup.exact_index import ExactIndex, RedisExactIndex, SqliteExactIndex
from refinery.dedup.fuzzy import FuzzyDeduper
from refinery.dedup.lsh_index import FuzzyIndex, LocalFuzzyIndex, RedisFuzzyIndex, lsh_params
from refinery.paths import Layout
from refinery.sft.dedup_keys import SftDedupScopeParams
from refinery.sft.schema import KEY_COLUMN, KIND_GROUPS

GROUPS = tuple(sorted(set(KIND_GROUPS.values())))
DEDUP_FIELDS = [pa.field("content_hash", pa.string()), pa.field("near_dup_similarity", pa.float32())]


class SftDedupParams(SftDedupScopeParams):
    exact: bool = Field(True, description="Drop prompts identical after normalization.")
    normalization: Literal["none", "whitespace", "simplified"] = Field(
        "simplified", description="What counts as the same prompt (as in exact_deduplicated)."
    )
    fuzzy: bool = Field(True, description="Drop near-duplicate prompts (MinHash-LSH).")
    num_perm: int = Field(128, description="MinHash permutations.")
    ngram: int = Field(3, description="Words per shingle (prompts are short).")
    threshold: float = Field(0.8, description="Estimated Jaccard at which prompts are near-duplicates.")
    seed: int = Field(1, description="Seed of the permutations (must match the index).")

    def index_params(self) -> dict:
        return lsh_params(self.num_perm, self.ngram, self.threshold, self.seed)


@dataclass
class _GroupIndexes:
    exact: ExactIndex
    fuzzy: FuzzyIndex


def open_group_indexes(
    backend: str, layout: Layout, redis_url: str, namespace: str, params: SftDedupParams
) -> dict[str, _GroupIndexes]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown dedup index backend {backend!r}; choose one of {BACKENDS}")
    out = {}
    for group in GROUPS:
        if backend == "local":
            out[group] = _GroupIndexes(
                SqliteExactIndex(layout.index / f"sft_exact_{group}.sqlite"),
                LocalFuzzyIndex(layout.index / f"sft_fuzzy_{group}.pickle", params.index_params()),
            )
        else:
            ns = f"{namespace}:sft-{group}"
            out[group] = _GroupIndexes(
                RedisExactIndex(redis_client(redis_url), ns),
                RedisFuzzyIndex(
                    redis_client(redis_url), redis_connection(redis_url), ns, params.index_params()
                ),
            )
    return out


class SftPromptDeduper:
    """Begin (withdraw the source's claims), :meth:`process` survivors per batch, then commit."""

    def __init__(self, indexes: dict[str, _GroupIndexes], source: str, params: SftDedupParams):
        self.indexes, self.source, self.params = indexes, source, params
        self.withdrawn: list[str] = []
        self.replaced = 0
        self._exact = {
            g: ExactDeduper(ix.exact, source, ExactDedupParams(normalization=params.normalization))
            for g, ix in indexes.items()
        }
        self._fuzzy = {g: FuzzyDeduper(ix.fuzzy, source, params.threshold) for g, ix in indexes.items()}

    def begin(self) -> None:
        for ix in self.indexes.values():
            ix.exact.begin(self.source)
            self.replaced += ix.fuzzy.remove_source(self.source)

    def process(self, frame: pd.DataFrame) -> pd.DataFrame:
        """Per row of ``frame`` (records that passed the rules): reason, detail, duplicate_of,
        similarity, content_hash, near_dup_similarity, indexed like ``frame``."""
        out = pd.DataFrame(
            {
                "reason": pd.Series([None] * len(frame), dtype=object),
                "reason_detail": pd.Series([None] * len(frame), dtype=object),
                "duplicate_of": pd.Series([None] * len(frame), dtype=object),
                "similarity": np.full(len(frame), np.nan),
                "content_hash": pd.Series([None] * len(frame), dtype=object),
                "near_dup_similarity": np.full(len(frame), np.nan, dtype=np.float32),
            },
            index=frame.index,
        )
        groups = frame["kind"].map(KIND_GROUPS)
        for group in GROUPS:
            sub = frame.loc[groups == group, ["id", KEY_COLUMN]].rename(columns={KEY_COLUMN: "text"})
            if not len(sub):
                continue
            position = dict(zip(sub["id"], sub.index, strict=True))
            survivors = sub
            if self.params.exact and group in self.params.exact_groups:
                result = self._exact[group].process(sub)
                self._record(out, result, position, "content_hash")
                survivors = result.kept
            if self.params.fuzzy and group in self.params.fuzzy_groups and len(survivors):
                result = self._fuzzy[group].process(survivors[["id", "text"]])
                self._record(out, result, position, "near_dup_similarity")
        return out

    @staticmethod
    def _record(out: pd.DataFrame, result: BatchResult, position: dict, score: str) -> None:
        for frame in (result.kept, result.rejected):
            rows = [position[i] for i in frame["id"]]
            out.loc[rows, score] = frame[score].to_numpy()
        rows = [position[i] for i in result.rejected["id"]]
        for col in ("reason", "reason_detail", "duplicate_of", "similarity"):
            out.loc[rows, col] = result.rejected[col].to_numpy()

    def commit(self) -> None:
        for ix in self.indexes.values():
            self.withdrawn += ix.exact.commit()
            ix.fuzzy.commit()

    def abort(self) -> None:
        for ix in self.indexes.values():
            ix.exact.abort()

    def close(self) -> None:
        for ix in self.indexes.values():
            ix.exact.close()
            ix.fuzzy.close()

    def sizes(self) -> dict[str, dict[str, int]]:
        return {g: {"exact": ix.exact.count(), "fuzzy": ix.fuzzy.count()} for g, ix in self.indexes.items()}
