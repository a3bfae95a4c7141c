"""Exact deduplication: one content hash per document, checked against the persistent index."""

from __future__ import annotations

import hashlib
from typing import Literal

import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.dedup.exact_index import ExactIndex
from refinery.dedup.keys import doc_key
from refinery.text.words import simplify

EXACT_FIELDS = [pa.field("content_hash", pa.string())]


class ExactDedupParams(BaseModel):
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


class ExactDeduper:
    """Streams one partition's batches through the index; the first occurrence is kept."""

    def __init__(self, index: ExactIndex, source: str, params: ExactDedupParams):
        self.index, self.source, self.params = index, source, params

    def process(self, frame: pd.DataFrame) -> BatchResult:
        hashes = [content_hash(t, self.params.normalization) for t in frame["text"].tolist()]
        claimed = self.index.lookup(list(set(hashes)))
        reasons, duplicate_of, new_claims = [], [], []
        for h, doc_id in zip(hashes, frame["id"].tolist(), strict=True):
            owner = claimed.get(h)
            if owner is None:
                claimed[h] = doc_key(self.source, doc_id)
                new_claims.append((h, doc_id))
                reasons.append(None)
            else:
                reasons.append(("exact_duplicate", f"same {self.params.normalization} text as {owner}"))
            duplicate_of.append(owner)
        self.index.claim(self.source, new_claims)
        out = frame.assign(content_hash=[h.hex() for h in hashes])
        return split_batch(out, reasons, {"duplicate_of": duplicate_of, "similarity": [1.0] * len(hashes)})
