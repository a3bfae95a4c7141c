"""tokenized_corpus' batch work: every kept document's token ids, an EOS appended.

The processor decides each row from that row alone (the stage is ``parallel``), so the engines
split a partition over their workers; ``tokenizers`` encodes a batch on its own threads.

A document's ``tokens`` are its ids followed by the EOS. Two cases are not kept as they are:

- **empty after tokenization** (the text encodes to no token, e.g. only characters the
  tokenizer's normalizer removes): rejected, reason ``empty_after_tokenization``;
- **over ``max_document_tokens``**: ``over_length="reject"`` rejects it (reason
  ``too_many_tokens``, the count in the detail); ``"split"`` keeps it, cut into pieces of at
  most ``max_document_tokens`` tokens, each followed by an EOS, so no attention span (the loader's
  document mask) is longer than the cap. ``pieces`` says how many.

Counts (documents, tokens, split documents) are the stage's report.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, Field

from refinery.batch import BatchResult, split_batch
from refinery.kernel.processor import StageProcessor
from refinery.metadata import Json

TOKEN_FIELDS = (
    pa.field("tokens", pa.list_(pa.int32())),  # ids, EOS included (one per piece)
    pa.field("n_tokens", pa.int64()),  # len(tokens)
    pa.field("pieces", pa.int32()),  # 1 unless the document was split
)
EMPTY = "empty_after_tokenization"
TOO_LONG = "too_many_tokens"


class TokenizeParams(BaseModel):
    """tokenized_corpus' parameters: what happens to documents over a length."""

    max_document_tokens: int | None = Field(
        None, description="Longest document (tokens, EOS excluded); None: no limit."
    )
    over_length: Literal["split", "reject"] = Field(
        "split", description="Over max_document_tokens: cut into pieces (each with an EOS), or reject."
    )


class DocumentTokenizer(StageProcessor):
    """A batch processor: ``text`` → ``tokens`` (EOS appended), ``n_tokens``, ``pieces``."""

    def __init__(self, tokenizer, eos_id: int, params: TokenizeParams):
        from tokenizers.processors import TemplateProcessing

        # The EOS is appended by the tokenizer's post-processor, as datatrove's DocumentTokenizer
        # does: it replaces the tokenizer's own (a byte-level one trims offsets for every token,
        # 15–30% of the encoding time on real text, for offsets nothing here reads).
        self.tokenizer = tokenizer
        self.eos_id = int(eos_id)
        eos_token = tokenizer.id_to_token(self.eos_id)
        tokenizer.post_processor = TemplateProcessing(
            single="$A " + eos_token, special_tokens=[(eos_token, self.eos_id)], pair=None
        )
        self.params = params
        self.counts = {"documents": 0, "tokens": 0, "split_documents": 0}

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Each text's ids followed by the EOS."""
        return [e.ids for e in self.tokenizer.encode_batch(texts, add_special_tokens=True)]

    def __call__(self, frame: pd.DataFrame) -> BatchResult:
        cap = self.params.max_document_tokens
        reasons, tokens, pieces, counts = [], [], [], []
        for ids in self.encode(frame["text"].tolist()):
            n = len(ids) - 1  # the EOS is last
            counts.append(n)
            if n == 0:
                reasons.append((EMPTY, "the text encodes to no token"))
                continue
            if cap is not None and n > cap:
                if self.params.over_length == "reject":
                    reasons.append((TOO_LONG, f"{n} tokens > max_document_tokens {cap}"))
                    continue
                parts = [ids[i : min(i + cap, n)] for i in range(0, n, cap)]
                ids = [t for part in parts for t in (*part, self.eos_id)]
                self.counts["split_documents"] += 1
            reasons.append(None)
            tokens.append(ids)
            pieces.append(-(-n // cap) if cap is not None else 1)
        result = split_batch(frame, reasons)
        # Rejected rows carry the stage's columns too: no tokens, and the count that decided.
        dropped = np.array([r is not None for r in reasons], dtype=bool)
        result.rejected["tokens"] = pd.Series([None] * len(result.rejected), dtype=object)
        result.rejected["n_tokens"] = np.asarray(counts, dtype=np.int64)[dropped]
        result.rejected["pieces"] = np.zeros(len(result.rejected), dtype=np.int32)
        kept = result.kept
        kept["tokens"] = pd.Series(tokens, dtype=object, index=kept.index)
        kept["n_tokens"] = np.array([len(t) for t in tokens], dtype=np.int64)
        kept["pieces"] = np.array(pieces, dtype=np.int32)
        self.counts["documents"] += len(tokens)
        self.counts["tokens"] += int(kept["n_tokens"].sum())
        return result

    def summary(self) -> dict:
        return dict(self.counts)

    def absorb(self, summary: dict) -> None:
        """Add another worker's counts (the Ray engine tokenizes slices in parallel)."""
        for key in self.counts:
            self.counts[key] += summary.get(key, 0)

    def report(self) -> dict:
        c = self.counts
        return {
            "tokens": c["tokens"],
            "documents_tokenized": c["documents"],
            "tokens_per_document": round(c["tokens"] / c["documents"], 1) if c["documents"] else 0.0,
            "split_documents": c["split_documents"],
            "tokenize_parameters": Json(self.params.model_dump()),
        }
