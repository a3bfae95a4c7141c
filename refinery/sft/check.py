"""The ``sft_checked`` stage over a batch: the rules, then prompt dedup of what passed them.

Rules run first so a record that fails one never claims its prompt in the dedup index: a bad
record cannot make a later good one with the same prompt look like a duplicate.
"""

from __future__ import annotations

import pandas as pd

from refinery.batch import BatchResult, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.sft.dedup import DEDUP_FIELDS, SftDedupParams, SftPromptDeduper
from refinery.sft.rules import RULE_FIELDS, SftRuleParams, SftRules

CHECK_FIELDS = RULE_FIELDS + DEDUP_FIELDS


class SftCheckParams(SftRuleParams, SftDedupParams):
    """Every threshold of sft_checked: the SFT rules and the prompt dedup."""


class SftChecker(StageProcessor):
    """The batch processor of ``sft_checked``: ``(frame) -> BatchResult`` for one partition, over the
    deduper that :meth:`SftPromptDeduper.claiming` yields."""

    def __init__(self, rules: SftRules, deduper: SftPromptDeduper):
        self.rules, self.deduper = rules, deduper

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        return check_batch(frame, self.rules, self.deduper)


def check_batch(frame: pd.DataFrame, rules: SftRules, deduper: SftPromptDeduper) -> BatchResult:
    frame = frame.reset_index(drop=True)
    scores, reasons = rules.apply(frame)
    out = frame.assign(**scores)
    passed = [r is None for r in reasons]
    dedup = deduper.decide(out.loc[passed])
    out["content_hash"] = pd.Series([None] * len(out), dtype=object)
    out["near_dup_similarity"] = float("nan")
    duplicate_of: list[str | None] = [None] * len(out)
    similarity: list[float | None] = [None] * len(out)
    out.loc[dedup.index, "content_hash"] = dedup["content_hash"]
    out.loc[dedup.index, "near_dup_similarity"] = dedup["near_dup_similarity"]
    for i, row in dedup.loc[dedup["reason"].notna()].iterrows():
        reasons[i] = (row["reason"], row["reason_detail"])
        duplicate_of[i] = row["duplicate_of"]
        similarity[i] = float(row["similarity"])
    return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": similarity})
