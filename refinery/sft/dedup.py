"""Exact and near-duplicate prompts, with the text pipeline's dedup library and index semantics.

Two records asking the same thing add little: the model sees the same instruction answered
twice (or, worse, answered two contradicting ways). The prompt is compared, through the same
code as documents: :class:`~refinery.dedup.exact.ExactDeduper` (content hash after
normalisation) and :class:`~refinery.dedup.fuzzy.FuzzyDeduper` (MinHash-LSH, verified by
estimated Jaccard), against persistent indexes of every SFT partition materialized before or at the
same time: the claim that reaches the index first wins (:mod:`refinery.dedup.claims`), and
re-materializing a partition withdraws its own claims first. :meth:`SftPromptDeduper.claiming` runs
one partition against every group's indexes as one context manager.

Demonstrations (instruction, conversation) and preference data (preference, ranked) have
separate indexes: one prompt in an SFT set and in a DPO set is normal, not a duplicate. The
indexes live beside the text pipeline's but apart from them (``index/sft_*``, or the
``{<namespace>:sft-<group>}:…`` keys in Redis), so SFT sources never withdraw claims of text
sources with the same name.

Prompts are short, so shingles are word 3-grams by default (5-grams on a ten-word prompt leave
too few shingles for one edited word to keep the similarity up).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from refinery.batch import BatchResult
from refinery.dedup.backends import BACKENDS, local_index_path, redis_client
from refinery.dedup.exact import ExactDeduper, ExactDedupParams
from refinery.dedup.exact_index import ExactIndex, ExactRun, RedisExactIndex, SqliteExactIndex
from refinery.dedup.fuzzy import FuzzyDeduper
from refinery.dedup.lsh_index import FuzzyIndex, FuzzyRun, RedisFuzzyIndex, SqliteFuzzyIndex, lsh_params
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
    recall: float = Field(
        0.9,
        description="P(LSH candidate) for a pair exactly at the threshold; sets the banding (as in fuzzy).",
    )

    def index_params(self) -> dict:
        return lsh_params(self.num_perm, self.ngram, self.threshold, self.seed, self.recall)


@dataclass
class GroupIndexes:
    exact: ExactIndex
    fuzzy: FuzzyIndex

    def close(self) -> None:
        self.exact.close()
        self.fuzzy.close()


def open_group_indexes(
    backend: str, layout: Layout, redis_url: str, namespace: str, params: SftDedupParams
) -> dict[str, GroupIndexes]:
    if backend not in BACKENDS:
        raise ValueError(f"unknown dedup index backend {backend!r}; choose one of {BACKENDS}")
    out: dict[str, GroupIndexes] = {}
    try:
        for group in GROUPS:
            if backend == "local":
                fuzzy_path = local_index_path(layout, "fuzzy", group)
                exact = SqliteExactIndex(local_index_path(layout, "exact", group))
                try:
                    fuzzy = SqliteFuzzyIndex(
                        fuzzy_path, params.index_params(), legacy=fuzzy_path.with_suffix(".pickle")
                    )
                except BaseException:
                    exact.close()
                    raise
            else:
                ns = f"{namespace}:sft-{group}"
                exact = RedisExactIndex(redis_client(redis_url), ns)
                try:
                    fuzzy = RedisFuzzyIndex(redis_client(redis_url), ns, params.index_params())
                except BaseException:
                    exact.close()
                    raise
            out[group] = GroupIndexes(exact, fuzzy)
    except BaseException:
        for ix in out.values():
            ix.close()
        raise
    return out


class SftPromptDeduper:
    """Prompt dedup of one SFT partition over every group's exact and fuzzy runs.

    Made by :meth:`claiming`; :meth:`decide` is called per batch (by
    :class:`refinery.sft.check.SftChecker`). After the ``with`` block, ``withdrawn`` lists the
    claims (exact and fuzzy, every group) withdrawn on enter and not renewed, ``replaced`` the fuzzy
    entries withdrawn on enter, and ``sizes`` every index's entries.
    """

    def __init__(self, runs: dict[str, tuple[ExactRun, FuzzyRun]], source: str, params: SftDedupParams):
        self.runs, self.source, self.params = runs, source, params
        self.withdrawn: list[str] = []
        self.replaced = 0
        self.sizes: dict[str, dict[str, int]] = {}
        self._exact = {
            g: ExactDeduper(exact, ExactDedupParams(normalization=params.normalization))
            for g, (exact, _) in runs.items()
        }
        self._fuzzy = {g: FuzzyDeduper(fuzzy) for g, (_, fuzzy) in runs.items()}

    @classmethod
    @contextmanager
    def claiming(
        cls, indexes: dict[str, GroupIndexes], source: str, params: SftDedupParams
    ) -> Iterator[SftPromptDeduper]:
        """Withdraw the source's claims in every group index, yield the deduper, then commit every
        index (or, on an exception, abort every one); the indexes are closed either way."""
        with ExitStack() as stack:
            for ix in indexes.values():
                stack.callback(ix.close)
            runs = {
                g: (
                    stack.enter_context(ix.exact.claiming(source)),
                    stack.enter_context(ix.fuzzy.claiming(source)),
                )
                for g, ix in indexes.items()
            }
            deduper = cls(runs, source, params)
            yield deduper
        deduper._finished()

    def _finished(self) -> None:
        runs = [r for pair in self.runs.values() for r in pair]
        self.withdrawn = sorted({k for r in runs for k in r.withdrawn})
        self.replaced = sum(fuzzy.replaced for _, fuzzy in self.runs.values())
        self.sizes = {g: {"exact": e.size, "fuzzy": f.size} for g, (e, f) in self.runs.items()}

    def decide(self, frame: pd.DataFrame, signatures: np.ndarray | None = None) -> pd.DataFrame:
        """Per row of ``frame`` (records that passed the rules): reason, detail, duplicate_of,
        similarity, content_hash, near_dup_similarity, indexed like ``frame``.

        ``signatures``, when given, are the rows' MinHash signatures in ``frame``'s order, computed
        ahead by an engine's workers (:func:`refinery.sft.check_plan.rule_table_function`);
        otherwise the fuzzy groups' prompts are signed here."""
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
                result = self._exact[group](sub)
                self._record(out, result, position, "content_hash")
                survivors = result.kept
            if self.params.fuzzy and group in self.params.fuzzy_groups and len(survivors):
                fuzzy = self._fuzzy[group]
                if signatures is not None:  # the survivors' rows of the signatures computed ahead
                    rows = frame.index.get_indexer([position[i] for i in survivors["id"]])
                    fuzzy = FuzzyDeduper(self.runs[group][1], signatures[rows])
                result = fuzzy(survivors[["id", "text"]])
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
