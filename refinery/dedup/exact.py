"""Exact deduplication: one content hash per document, checked against the persistent index."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Literal

import pandas as pd
import pyarrow as pa
from pydantic import Field

from refinery.batch import BatchResult, split_batch
from refinery.dedup.claims import ClaimBatchParams
from refinery.dedup.exact_index import ExactRun
from refinery.ids import doc_key
from refinery.kernel.processor import StageProcessor
from refinery.text.words import simplify

EXACT_FIELDS = [pa.field("content_hash", pa.string())]


class ExactDedupParams(ClaimBatchParams):
    normalization: Literal["none", "whitespace", "simplified"] = Field(
        "simplified",
        description="What counts as the same text: byte-identical ('none'), identical up to spacing "
        "('whitespace'), or identical up to case, punctuation, spacing, digits and accents ('simplified').",
    )


def normalize_for_hash(text: str, normalization: str) -> str:
    if normalization == "none":
        return text
    if normalization == "whitespace":
        return " ".join(text.split())
    return simplify(text)


def content_hash(text: str, normalization: str) -> bytes:
    data = normalize_for_hash(text, normalization).encode("utf-8", "surrogatepass")
    return hashlib.blake2b(data, digest_size=16).digest()


class ExactDeduper(StageProcessor):
    """The batch processor of exact dedup over one partition's :class:`ExactRun`.

    Per batch: content hashes, then one atomic claim of the batch's distinct hashes (the first
    occurrence in reading order stands for the batch). A row is kept where its own claim won;
    every other row names the owner, whether another partition's document, an earlier batch's, or
    an earlier row of the same batch.

    ``hashes``, when given, are the content hashes of exactly the frame it is called with, computed
    ahead by an engine's workers (:mod:`refinery.dedup.claim_plan`); otherwise each batch is hashed
    here.
    """

    def __init__(self, claims: ExactRun, params: ExactDedupParams, hashes: Sequence[bytes] | None = None):
        self.claims, self.params = claims, params
        self._ahead = hashes

    def _hashes(self, frame: pd.DataFrame) -> list[bytes]:
        if self._ahead is None:
            return [content_hash(t, self.params.normalization) for t in frame["text"].tolist()]
        if len(self._ahead) != len(frame):
            raise ValueError(
                f"{len(self._ahead)} content hashes computed ahead for a batch of {len(frame)} rows"
            )
        return list(self._ahead)

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        source = self.claims.source
        hashes = self._hashes(frame)
        ids = frame["id"].tolist()
        first: dict[bytes, int] = {}
        for row, h in enumerate(hashes):
            first.setdefault(h, row)
        owners = self.claims.claim([(h, ids[row]) for h, row in first.items()])
        reasons, duplicate_of = [], []
        for row, (h, doc_id) in enumerate(zip(hashes, ids, strict=True)):
            owner = owners[h]
            if first[h] == row and owner == doc_key(source, doc_id):
                reasons.append(None)
                duplicate_of.append(None)
            else:
                reasons.append(("exact_duplicate", f"same {self.params.normalization} text as {owner}"))
                duplicate_of.append(owner)
        out = frame.assign(content_hash=[h.hex() for h in hashes])
        return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": [1.0] * len(hashes)})
